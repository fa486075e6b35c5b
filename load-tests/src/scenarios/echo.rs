//! `echo`: C connections each send M messages to the mock echo route (full route selection
//! on `$request.body.action`, falling to `$default`) and await each reply; messages/s and
//! latency p50/p99/p99.9, against the bare baseline server and then the gateway.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Common, Expect, round_trips};
use crate::procs::{Gateway, GatewayConfig, Helper, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::round2;

/// `loadgen echo` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections (each keeps one message in flight).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Timed messages per connection.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Untimed messages per connection first.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Padding bytes in each message.
    #[arg(long, default_value_t = 32)]
    pub pad: usize,
}

/// Runs the baseline, then the gateway.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let limit = args.common.limit();
    let (c, m, w, p) = (args.connections, args.messages, args.warmup, args.pad);
    let baseline = {
        let server = Helper::start(&["baseline-server", "--listen", "127.0.0.1:0"])?;
        round_trips(server.addr, "/", c, m, w, p, Expect::Same, limit).await?
    };
    let gateway = {
        let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
        let r = round_trips(gw.client_addr, "/prod", c, m, w, p, Expect::Same, limit).await?;
        gw.check_alive()?;
        r
    };
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round2(a / b)),
        _ => Value::Null,
    };
    Ok(json!({
        "scenario": "echo",
        "ok": baseline["errors"] == 0 && gateway["errors"] == 0,
        "throughput_per_s": gateway["messages_per_s"],
        "params": {"connections": c, "messages_per_connection": m, "warmup": w, "pad_bytes": p},
        "ratio_throughput": ratio(&gateway["messages_per_s"], &baseline["messages_per_s"]),
        "ratio_p99": ratio(&gateway["latency"]["p99_ms"], &baseline["latency"]["p99_ms"]),
        "baseline": baseline,
        "gateway": gateway,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let mut t = Table::new(
        format!(
            "echo: {} connections x {} messages (gateway/baseline: throughput {}, p99 {})",
            num(&v["params"]["connections"]),
            num(&v["params"]["messages_per_connection"]),
            num(&v["ratio_throughput"]),
            num(&v["ratio_p99"]),
        ),
        &latency_header(&["server", "msgs/s", "errors"]),
    );
    for side in ["baseline", "gateway"] {
        let r = &v[side];
        let mut cells = vec![num(&r["messages_per_s"]), num(&r["errors"])];
        cells.extend(latency_cells(&r["latency"]));
        t.row(side, cells);
    }
    t
}
