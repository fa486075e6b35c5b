//! `fanout`: N members join one group (PUT /@groups/{g}/members/{id}, ids from the whoami
//! route); POST /@groups/{g} with a timestamp payload, a few times (after one untimed
//! warm-up); deliveries per second (copies / time until the last copy arrived) and delivery
//! latency p50/p99 over every copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use super::{Common, broadcasts};
use crate::client::{self, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Deliveries};

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
}

/// Runs the scenario against one gateway.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
    let start = Instant::now();
    let members =
        client::connect_members(gw.client_addr, args.members, 64, &SourceAddrs::fresh()).await?;
    let connect_s = start.elapsed().as_secs_f64();
    let (clients, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let start = Instant::now();
    let joined = client::join_group(gw.management_addr, "fanout", &ids, 8).await?;
    let join_s = start.elapsed().as_secs_f64();
    let deliveries = Arc::new(Deliveries::new(args.broadcasts + 1));
    let _readers = client::spawn_readers(clients, &deliveries);
    let result = broadcasts(
        gw.management_addr,
        "fanout",
        args.members as u64,
        args.broadcasts,
        args.pad,
        &deliveries,
        Duration::from_secs(args.common.max_secs.min(30)),
    )
    .await?;
    gw.check_alive()?;
    Ok(json!({
        "scenario": "fanout",
        "ok": result["delivered"] == result["expected"] && joined == args.members,
        "throughput_per_s": result["deliveries_per_s"],
        "params": {"members": args.members, "broadcasts": args.broadcasts, "pad_bytes": args.pad},
        "connect_per_s": stats::rate(args.members as u64, connect_s),
        "joins_per_s": stats::rate(joined as u64, join_s),
        "gateway": result,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let g = &v["gateway"];
    let mut t = Table::new(
        format!(
            "fanout: {} broadcasts to {} members: {} deliveries/s, {} of {} delivered (joins {}/s)",
            num(&g["broadcasts"]),
            num(&g["members"]),
            num(&g["deliveries_per_s"]),
            num(&g["delivered"]),
            num(&g["expected"]),
            num(&v["joins_per_s"]),
        ),
        &latency_header(&["broadcast", "deliveries/s", "POST ms", "last copy ms"]),
    );
    if let Some(per) = g["per_broadcast"].as_array() {
        for (i, b) in per.iter().enumerate() {
            t.row(
                &format!("#{}", i + 1),
                vec![
                    num(&b["deliveries_per_s"]),
                    num(&b["post_ms"]),
                    num(&b["last_delivery_ms"]),
                    num(&b["p50_ms"]),
                    "".into(),
                    num(&b["p99_ms"]),
                ],
            );
        }
    }
    let mut cells = vec![num(&g["deliveries_per_s"]), "".into(), "".into()];
    cells.extend(latency_cells(&g["delivery_latency"]));
    t.row("all", cells);
    t
}
