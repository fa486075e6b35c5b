//! `connect`: handshakes per second and handshake time (TCP connect to 101) with K
//! handshakes in flight; each connection is then closed cleanly (close frame, wait for the
//! server's) so the count is of whole short-lived connections. The baseline, the gateway
//! without a `$connect` route and the gateway with a mock `$connect` run side by side and
//! are measured in alternating rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::Common;
use crate::client::{self, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, Helper, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Sample, ratio};

/// `loadgen connect` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Timed handshakes per server per round.
    #[arg(long, default_value_t = 6000)]
    pub handshakes: usize,
    /// Rounds, each measuring the baseline, the gateway and the gateway with `$connect`.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Untimed handshakes before the first round.
    #[arg(long, default_value_t = 1000)]
    pub warmup: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Connects, closes cleanly, and reports the handshake time in µs.
async fn one(addr: SocketAddr, path: &str, sources: &SourceAddrs) -> Result<u64> {
    let start = Instant::now();
    let mut ws = client::ws_connect(addr, path, sources.next()).await?;
    let us = start.elapsed().as_micros() as u64;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(us)
}

/// `n` handshakes with `concurrency` in flight, after `warmup` untimed ones.
async fn measure(
    addr: SocketAddr,
    path: &'static str,
    n: usize,
    warmup: usize,
    args: &Args,
) -> Result<Sample> {
    let sources = Arc::new(SourceAddrs::fresh());
    let deadline = Instant::now() + args.common.limit();
    let run = |count: usize| {
        let tickets = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (tickets, sources) = (tickets.clone(), sources.clone());
                tokio::spawn(async move {
                    let mut sample = Sample::default();
                    while tickets.fetch_add(1, Ordering::Relaxed) < count
                        && Instant::now() < deadline
                    {
                        match one(addr, path, &sources).await {
                            Ok(us) => stats::record(&mut sample.hist, us),
                            Err(e) => sample.error(format!("{e:#}")),
                        }
                    }
                    sample
                })
            })
            .collect();
        Sample::gather(tasks)
    };
    run(warmup).await?;
    let start = Instant::now();
    let mut sample = run(n).await?;
    sample.elapsed = start.elapsed().as_secs_f64();
    sample.timed_out = Instant::now() > deadline;
    Ok(sample)
}

/// The baseline, the gateway and the gateway with a mock `$connect` run side by side and
/// are measured in alternating rounds.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let n = args.handshakes;
    let server = Helper::start(&["baseline-server", "--listen", "127.0.0.1:0"])?;
    let mut plain = Gateway::start(&binary, &GatewayConfig::echo())?;
    let connect_config = GatewayConfig {
        mock_connect: true,
        ..GatewayConfig::echo()
    };
    let mut with_connect = Gateway::start(&binary, &connect_config)?;
    let mut samples: [Sample; 3] = Default::default();
    for round in 0..args.rounds.max(1) {
        let warmup = if round == 0 { args.warmup } else { 0 };
        let targets = [
            (server.addr, "/"),
            (plain.client_addr, "/prod"),
            (with_connect.client_addr, "/prod"),
        ];
        for (sample, (addr, path)) in samples.iter_mut().zip(targets) {
            sample.absorb(measure(addr, path, n, warmup, args).await?);
        }
    }
    plain.check_alive()?;
    with_connect.check_alive()?;
    let [baseline, gateway, with_connect] =
        samples.map(|s| s.json("handshakes", "handshakes_per_s"));
    let ok = [&baseline, &gateway, &with_connect]
        .iter()
        .all(|r| r["errors"] == 0);
    Ok(json!({
        "scenario": "connect",
        "ok": ok,
        "throughput_per_s": gateway["handshakes_per_s"],
        "params": {"handshakes": n, "rounds": args.rounds, "warmup": args.warmup,
                   "concurrency": args.concurrency},
        "ratio_no_connect": ratio(&gateway["handshakes_per_s"], &baseline["handshakes_per_s"]),
        "ratio_mock_connect": ratio(&with_connect["handshakes_per_s"], &baseline["handshakes_per_s"]),
        "baseline": baseline,
        "gateway": gateway,
        "gateway_mock_connect": with_connect,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let mut t = Table::new(
        format!(
            "connect: {} handshakes x {} rounds, {} in flight (gateway/baseline: {} without $connect, {} with a mock $connect)",
            num(&v["params"]["handshakes"]),
            num(&v["params"]["rounds"]),
            num(&v["params"]["concurrency"]),
            num(&v["ratio_no_connect"]),
            num(&v["ratio_mock_connect"]),
        ),
        &latency_header(&["server", "handshakes/s", "errors"]),
    );
    for (label, key) in [
        ("baseline", "baseline"),
        ("gateway", "gateway"),
        ("gateway + mock $connect", "gateway_mock_connect"),
    ] {
        let r = &v[key];
        let mut cells = vec![num(&r["handshakes_per_s"]), num(&r["errors"])];
        cells.extend(latency_cells(&r["latency"]));
        t.row(label, cells);
    }
    t
}
