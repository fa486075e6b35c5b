//! `fanout`: N members of one group get a broadcast with a timestamp payload, a few times
//! (after one untimed warm-up); deliveries per second (copies / time until the last copy
//! arrived), delivery latency p50/p99 over every copy, and the CPU time each side spent
//! per delivery. Against the baseline server in `--broadcast` mode (N connections; one of
//! them sends each payload as a frame and the server writes it to all N) and against the
//! gateway (N members join with PUT /@groups/{g}/members/{id}, ids from the whoami route;
//! POST /@groups/{g}), in alternating rounds with fresh connections each: both at once
//! would need 2N descriptors in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Broadcasts, Common, broadcasts, post_to_group};
use crate::client::{self, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, Helper, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Deliveries, ratio};

/// `loadgen fanout` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Group members (connected clients).
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Timed broadcasts.
    #[arg(long, default_value_t = 5)]
    pub broadcasts: usize,
    /// Padding bytes in each broadcast.
    #[arg(long, default_value_t = 32)]
    pub pad: usize,
    /// Rounds, each measuring the baseline and then the gateway with fresh connections
    /// (the broadcasts are split between them).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Measure the gateway only.
    #[arg(long)]
    pub no_baseline: bool,
}

/// Alternates baseline and gateway rounds, each with its share of the broadcasts.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let rounds = args.rounds.clamp(1, args.broadcasts.max(1));
    let (mut baseline_all, mut gateway_all) = (None::<Broadcasts>, None::<Broadcasts>);
    let (mut connect_s, mut join_s, mut joined) = (0.0, 0.0, 0);
    for round in 0..rounds {
        // The broadcasts split as evenly as they go.
        let count = args.broadcasts / rounds + usize::from(round < args.broadcasts % rounds);
        if !args.no_baseline {
            let b = baseline(args, count).await?;
            merge(&mut baseline_all, b);
        }
        let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
        let start = Instant::now();
        let members =
            client::connect_members(gw.client_addr, args.members, 64, &SourceAddrs::fresh())
                .await?;
        connect_s += start.elapsed().as_secs_f64();
        let (clients, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        let start = Instant::now();
        joined += client::join_group(gw.management_addr, "fanout", &ids, 8).await?;
        join_s += start.elapsed().as_secs_f64();
        let deliveries = Arc::new(Deliveries::new(count + 1));
        let readers = client::spawn_readers(clients, &deliveries);
        let g = broadcasts(
            post_to_group(gw.management_addr, "fanout"),
            args.members as u64,
            count,
            args.pad,
            &deliveries,
            per_broadcast(args),
            &[gw.pid()],
        )
        .await?;
        gw.check_alive()?;
        drop(readers);
        merge(&mut gateway_all, g);
    }
    let json_of = |b: &Option<Broadcasts>| b.as_ref().map_or(Value::Null, Broadcasts::json);
    let (baseline, gateway) = (json_of(&baseline_all), json_of(&gateway_all));
    let complete = |v: &Value| v.is_null() || v["delivered"] == v["expected"];
    let members = (args.members * rounds) as u64;
    Ok(json!({
        "scenario": "fanout",
        "ok": complete(&gateway) && complete(&baseline) && joined == args.members * rounds,
        "throughput_per_s": gateway["deliveries_per_s"],
        "params": {"members": args.members, "broadcasts": args.broadcasts, "rounds": rounds,
                   "pad_bytes": args.pad},
        "connect_per_s": stats::rate(members, connect_s),
        "joins_per_s": stats::rate(joined as u64, join_s),
        "ratio_throughput": ratio(&gateway["deliveries_per_s"], &baseline["deliveries_per_s"]),
        "ratio_p99": ratio(&gateway["delivery_latency"]["p99_ms"], &baseline["delivery_latency"]["p99_ms"]),
        "baseline": baseline,
        "gateway": gateway,
    }))
}

fn merge(all: &mut Option<Broadcasts>, round: Broadcasts) {
    match all {
        Some(all) => all.absorb(round),
        None => *all = Some(round),
    }
}

fn per_broadcast(args: &Args) -> Duration {
    Duration::from_secs(args.common.max_secs.min(30))
}

/// `count` broadcasts through the baseline server in `--broadcast` mode: the last of the
/// N connections also sends each payload (and counts its own copy, as the server writes
/// it to every connection).
async fn baseline(args: &Args, count: usize) -> Result<Broadcasts> {
    let server = Helper::start(&["baseline-server", "--listen", "127.0.0.1:0", "--broadcast"])?;
    let mut clients =
        client::connect_many(server.addr, "/", args.members, 64, &SourceAddrs::fresh()).await?;
    let Some(sender) = clients.pop() else {
        bail!("fanout needs at least one member");
    };
    let deliveries = Arc::new(Deliveries::new(count + 1));
    let (mut sink, frames) = sender.split();
    let mut readers = client::spawn_readers(clients, &deliveries);
    readers.spawn(client::read_into(
        args.members - 1,
        frames,
        deliveries.clone(),
    ));
    let send = async move |body: String| {
        sink.send(Message::text(body)).await?;
        Ok(())
    };
    broadcasts(
        send,
        args.members as u64,
        count,
        args.pad,
        &deliveries,
        per_broadcast(args),
        &[server.pid()],
    )
    .await
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let g = &v["gateway"];
    let mut t = Table::new(
        format!(
            "fanout: {} broadcasts to {} members: gateway {} deliveries/s, {} of {} delivered \
             (baseline {}/s; gateway/baseline: throughput {}, p99 {}; joins {}/s)",
            num(&g["broadcasts"]),
            num(&g["members"]),
            num(&g["deliveries_per_s"]),
            num(&g["delivered"]),
            num(&g["expected"]),
            num(&v["baseline"]["deliveries_per_s"]),
            num(&v["ratio_throughput"]),
            num(&v["ratio_p99"]),
            num(&v["joins_per_s"]),
        ),
        &latency_header(&[
            "server",
            "deliveries/s",
            "server CPU µs/delivery",
            "generator CPU µs/delivery",
        ]),
    );
    for (name, s) in [("baseline", &v["baseline"]), ("gateway", g)] {
        if s.is_null() {
            continue;
        }
        let mut cells = vec![
            num(&s["deliveries_per_s"]),
            num(&s["cpu_us_per_delivery"]["server"]),
            num(&s["cpu_us_per_delivery"]["generator"]),
        ];
        cells.extend(latency_cells(&s["delivery_latency"]));
        t.row(name, cells);
    }
    t
}
