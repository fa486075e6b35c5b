//! `connect`: handshakes per second and handshake time (TCP connect to 101) with K
//! handshakes in flight; each connection is then closed cleanly (close frame, wait for the
//! server's) so the count is of whole short-lived connections. Runs against the baseline,
//! the gateway without a `$connect` route, and the gateway with a mock `$connect`.

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
use crate::stats::{self, round2};

/// `loadgen connect` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Timed handshakes per server.
    #[arg(long, default_value_t = 20_000)]
    pub handshakes: usize,
    /// Untimed handshakes first.
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

/// `n` handshakes with `concurrency` in flight; `{"handshakes", "errors", "handshakes_per_s", "latency", …}`.
async fn measure(addr: SocketAddr, path: &'static str, n: usize, args: &Args) -> Result<Value> {
    let sources = Arc::new(SourceAddrs::fresh());
    let deadline = Instant::now() + args.common.limit();
    let run = |count: usize| {
        let tickets = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| {
                let (tickets, sources) = (tickets.clone(), sources.clone());
                tokio::spawn(async move {
                    let mut hist = stats::histogram();
                    let (mut errors, mut first_error) = (0u64, None::<String>);
                    while tickets.fetch_add(1, Ordering::Relaxed) < count
                        && Instant::now() < deadline
                    {
                        match one(addr, path, &sources).await {
                            Ok(us) => stats::record(&mut hist, us),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(format!("{e:#}"));
                            }
                        }
                    }
                    (hist, errors, first_error)
                })
            })
            .collect();
        async move {
            let mut all = stats::histogram();
            let (mut errors, mut first_error) = (0u64, None);
            for task in tasks {
                let (hist, e, fe) = task.await?;
                let _ = all.add(&hist);
                errors += e;
                first_error = first_error.or(fe);
            }
            Ok::<_, anyhow::Error>((all, errors, first_error))
        }
    };
    run(args.warmup).await?;
    let start = Instant::now();
    let (hist, errors, first_error) = run(n).await?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "handshakes": hist.len(),
        "errors": errors,
        "first_error": first_error,
        "timed_out": Instant::now() > deadline,
        "elapsed_s": round2(elapsed),
        "handshakes_per_s": stats::rate(hist.len(), elapsed),
        "latency": stats::summary(&hist),
    }))
}

/// Baseline, gateway, gateway with a mock `$connect`, back to back.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let n = args.handshakes;
    let baseline = {
        let server = Helper::start(&["baseline-server", "--listen", "127.0.0.1:0"])?;
        measure(server.addr, "/", n, args).await?
    };
    let gateway = {
        let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
        let r = measure(gw.client_addr, "/prod", n, args).await?;
        gw.check_alive()?;
        r
    };
    let with_connect = {
        let config = GatewayConfig {
            mock_connect: true,
            ..GatewayConfig::echo()
        };
        let mut gw = Gateway::start(&binary, &config)?;
        let r = measure(gw.client_addr, "/prod", n, args).await?;
        gw.check_alive()?;
        r
    };
    let ratio = |r: &Value| {
        let (a, b) = (
            r["handshakes_per_s"].as_f64().unwrap_or(0.0),
            baseline["handshakes_per_s"].as_f64().unwrap_or(0.0),
        );
        if b > 0.0 { json!(round2(a / b)) } else { Value::Null }
    };
    let ok = [&baseline, &gateway, &with_connect]
        .iter()
        .all(|r| r["errors"] == 0);
    Ok(json!({
        "scenario": "connect",
        "ok": ok,
        "throughput_per_s": gateway["handshakes_per_s"],
        "params": {"handshakes": n, "warmup": args.warmup, "concurrency": args.concurrency},
        "ratio_no_connect": ratio(&gateway),
        "ratio_mock_connect": ratio(&with_connect),
        "baseline": baseline,
        "gateway": gateway,
        "gateway_mock_connect": with_connect,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let mut t = Table::new(
        format!(
            "connect: {} handshakes, {} in flight (gateway/baseline: {} without $connect, {} with a mock $connect)",
            num(&v["params"]["handshakes"]),
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
