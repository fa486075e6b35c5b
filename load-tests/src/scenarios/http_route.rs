//! `http-route`: round trips through the gateway to a real local HTTP backend (an `http`
//! integration in proxy mode on a two-way `$default` route; the backend answers a
//! Lambda-proxy response), and the same backend called directly over keep-alive HTTP/1.1
//! with an event-sized body, in alternating rounds; reports what the gateway adds at p50
//! and p99.
//!
//! Each round measures twice: paced at `--rate` requests/s in all (what the gateway adds
//! to a request, the target), and closed-loop (as fast as the connections go: the
//! throughput of each path). In a closed loop that saturates the machine the p50 is about
//! connections ÷ throughput (Little's law), so there it measures throughput, not the
//! latency the gateway adds; it is reported beside, not used for the target.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Common, Exchange, Expect, Failed, Loop, drive, round_trips};
use crate::client::HttpConn;
use crate::procs::{DefaultRoute, Gateway, GatewayConfig, Helper, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::servers::{BACKEND_ANSWER, BACKEND_FRAME};
use crate::stats::Sample;

/// `loadgen http-route` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections (WebSocket through the gateway; HTTP directly), one request in flight each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Timed requests per connection per round.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Untimed requests per connection at the start of each round.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Rounds, each measuring the backend directly and then through the gateway.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Requests per second in all for the paced measurement.
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,
}

/// A MESSAGE event of the size and shape the gateway POSTs (for the direct calls).
fn sample_event(seq: usize) -> String {
    json!({
        "requestContext": {
            "routeKey": "$default", "messageId": format!("m{seq:015}"), "eventType": "MESSAGE",
            "extendedRequestId": format!("e{seq:015}"), "requestTime": "25/Nov/2026:04:07:19 +0000",
            "messageDirection": "IN", "stage": "prod", "connectedAt": 1_795_000_000_000u64,
            "requestTimeEpoch": 1_795_000_000_123u64,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "loadgen"},
            "requestId": format!("r{seq:015}"), "domainName": "127.0.0.1:8080",
            "connectionId": "vwdIIxuYcmKcqLB6", "apiId": "switchboard",
        },
        "body": format!(r#"{{"action":"echo","conn":0,"seq":{seq},"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#),
        "isBase64Encoded": false,
    })
    .to_string()
}

/// A keep-alive HTTP connection POSTing MESSAGE-sized events straight to the backend.
struct DirectClient {
    http: HttpConn,
}

impl Exchange for DirectClient {
    type Request = Bytes;

    fn request(&self, _c: usize, i: usize) -> Bytes {
        Bytes::from(sample_event(i))
    }

    async fn exchange(&mut self, body: Bytes) -> Result<(), Failed> {
        let why = match self
            .http
            .request(hyper::Method::POST, "/events", body)
            .await
        {
            Ok((200, answer)) if answer == BACKEND_ANSWER.as_bytes() => return Ok(()),
            Ok((status, _)) => format!("backend answered {status}"),
            Err(e) => format!("{e:#}"),
        };
        Err(Failed { why, fatal: false })
    }
}

/// POSTs straight to the backend over `size.conns` connections (see [`drive`]).
async fn direct(backend: SocketAddr, size: Loop, limit: Duration) -> Result<Sample> {
    let clients = (0..size.conns.max(1))
        .map(|_| DirectClient {
            http: HttpConn::new(backend),
        })
        .collect();
    drive(clients, size, limit).await
}

/// Directly and through the gateway in alternating rounds, against one backend process:
/// paced, then closed-loop.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let backend = Helper::start(&["http-backend", "--listen", "127.0.0.1:0"])?;
    let config = GatewayConfig {
        default_route: DefaultRoute::HttpProxy(format!("http://{}/events", backend.addr)),
        ..GatewayConfig::echo()
    };
    let mut gw = Gateway::start(&binary, &config)?;
    let saturated = Loop {
        conns: args.connections,
        msgs: args.messages,
        warmup: args.warmup,
        pad: 32,
        every: None,
    };
    let paced = Loop {
        every: Some(Duration::from_secs_f64(
            args.connections.max(1) as f64 / f64::from(args.rate.max(1)),
        )),
        ..saturated
    };
    let limit = args.common.limit();
    let expect = Expect::Text(BACKEND_FRAME);
    let mut samples: [Sample; 4] = Default::default();
    for _ in 0..args.rounds.max(1) {
        for (i, size) in [paced, saturated].into_iter().enumerate() {
            samples[2 * i].absorb(direct(backend.addr, size, limit).await?);
            let round = round_trips(gw.client_addr, "/prod", size, expect, limit);
            samples[2 * i + 1].absorb(round.await?);
        }
    }
    gw.check_alive()?;
    let [direct, gateway, direct_saturated, gateway_saturated] =
        samples.map(|s| s.json("messages", "messages_per_s"));
    let added = |gateway: &Value, direct: &Value, k: &str| match (
        gateway["latency"][k].as_f64(),
        direct["latency"][k].as_f64(),
    ) {
        (Some(g), Some(d)) => json!(((g - d) * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    let errors = [&direct, &gateway, &direct_saturated, &gateway_saturated]
        .iter()
        .all(|s| s["errors"] == 0);
    Ok(json!({
        "scenario": "http-route",
        "ok": errors,
        "throughput_per_s": gateway_saturated["messages_per_s"],
        "params": {"connections": args.connections, "messages_per_connection": args.messages,
                   "rounds": args.rounds, "warmup": args.warmup, "mode": "proxy", "two_way": true,
                   "paced_rate_per_s": args.rate},
        "added_p50_ms": added(&gateway, &direct, "p50_ms"),
        "added_p99_ms": added(&gateway, &direct, "p99_ms"),
        "added_saturated_p50_ms": added(&gateway_saturated, &direct_saturated, "p50_ms"),
        "added_saturated_p99_ms": added(&gateway_saturated, &direct_saturated, "p99_ms"),
        "direct": direct,
        "gateway": gateway,
        "direct_saturated": direct_saturated,
        "gateway_saturated": gateway_saturated,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let mut t = Table::new(
        format!(
            "http-route: {} connections x {} requests x {} rounds, paced at {}/s in all and closed-loop \
             (gateway adds p50 {} ms, p99 {} ms paced; {} ms, {} ms closed-loop)",
            num(&v["params"]["connections"]),
            num(&v["params"]["messages_per_connection"]),
            num(&v["params"]["rounds"]),
            num(&v["params"]["paced_rate_per_s"]),
            num(&v["added_p50_ms"]),
            num(&v["added_p99_ms"]),
            num(&v["added_saturated_p50_ms"]),
            num(&v["added_saturated_p99_ms"]),
        ),
        &latency_header(&["path", "req/s", "errors"]),
    );
    for (label, key) in [
        ("backend directly, paced", "direct"),
        ("through the gateway, paced", "gateway"),
        ("backend directly, closed-loop", "direct_saturated"),
        ("through the gateway, closed-loop", "gateway_saturated"),
    ] {
        let r = &v[key];
        if r.is_null() {
            continue;
        }
        let mut cells = vec![num(&r["messages_per_s"]), num(&r["errors"])];
        cells.extend(latency_cells(&r["latency"]));
        t.row(label, cells);
    }
    t
}
