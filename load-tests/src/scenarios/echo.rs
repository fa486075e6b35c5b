//! `echo`: C connections each send M messages to the mock echo route (full route selection
//! on `$request.body.action`, falling to `$default`) and await each reply; messages/s and
//! latency p50/p99/p99.9. The baseline server and the gateway run side by side and are
//! measured in alternating rounds, so background noise lands on both alike.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Common, Expect, Loop, round_trips};
use crate::procs::{Gateway, GatewayConfig, Helper, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{Sample, ratio};

/// `loadgen echo` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections (each keeps one message in flight).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Timed messages per connection per round.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Untimed messages per connection at the start of each round.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Rounds, each measuring the baseline and then the gateway.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Padding bytes in each message.
    #[arg(long, default_value_t = 32)]
    pub pad: usize,
}

/// Alternates baseline and gateway rounds.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let limit = args.common.limit();
    let size = Loop {
        conns: args.connections,
        msgs: args.messages,
        warmup: args.warmup,
        pad: args.pad,
        every: None,
    };
    let server = Helper::start(&["baseline-server", "--listen", "127.0.0.1:0"])?;
    let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
    let (mut baseline, mut gateway) = (Sample::default(), Sample::default());
    for _ in 0..args.rounds.max(1) {
        baseline.absorb(round_trips(server.addr, "/", size, Expect::Same, limit).await?);
        gateway.absorb(round_trips(gw.client_addr, "/prod", size, Expect::Same, limit).await?);
    }
    gw.check_alive()?;
    let baseline = baseline.json("messages", "messages_per_s");
    let gateway = gateway.json("messages", "messages_per_s");
    Ok(json!({
        "scenario": "echo",
        "ok": baseline["errors"] == 0 && gateway["errors"] == 0,
        "throughput_per_s": gateway["messages_per_s"],
        "params": {"connections": args.connections, "messages_per_connection": args.messages,
                   "rounds": args.rounds, "warmup": args.warmup, "pad_bytes": args.pad},
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
            "echo: {} connections x {} messages x {} rounds (gateway/baseline: throughput {}, p99 {})",
            num(&v["params"]["connections"]),
            num(&v["params"]["messages_per_connection"]),
            num(&v["params"]["rounds"]),
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
