//! `callback`: POST /@connections/{id} from several callers (each one keep-alive HTTP/1.1
//! connection, one request at a time) to many connections round-robin; POST throughput and
//! latency (request to 200), and delivery latency (timestamp in the payload to the frame
//! arriving at the client).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Common;
use crate::client::{self, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Deliveries, KIND_POST, round2};

/// `loadgen callback` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connected clients the posts go to.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    pub callers: usize,
    /// POSTs in all.
    #[arg(long, default_value_t = 100_000)]
    pub posts: usize,
    /// Padding bytes in each message.
    #[arg(long, default_value_t = 32)]
    pub pad: usize,
}

/// Runs the scenario against one gateway.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let mut gw = Gateway::start(&binary, &GatewayConfig::echo())?;
    let members =
        client::connect_members(gw.client_addr, args.connections, 64, &SourceAddrs::fresh())
            .await?;
    let (clients, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let ids = Arc::new(ids);
    let deliveries = Arc::new(Deliveries::new(0));
    let _readers = client::spawn_readers(clients, &deliveries);
    let deadline = Instant::now() + args.common.limit();
    let tickets = Arc::new(AtomicUsize::new(0));
    let (posts, pad, management) = (args.posts, args.pad, gw.management_addr);
    let start = Instant::now();
    let next = move |_caller: usize, _i: usize| {
        let i = tickets.fetch_add(1, Ordering::Relaxed);
        if i >= posts || Instant::now() > deadline {
            return None;
        }
        let path = format!("/@connections/{}", ids[i % ids.len()]);
        Some((path, Bytes::from(stats::stamp(KIND_POST, pad))))
    };
    let client::Posted {
        accepted: all,
        statuses,
        first_error,
    } = client::post_closed_loop(management, args.callers, 200, next).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let accepted = all.len();
    let wait_until = Instant::now() + Duration::from_secs(10);
    while deliveries.posts.count() < accepted && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.check_alive()?;
    let delivered = deliveries.posts.count();
    let sent: u64 = statuses.values().sum();
    Ok(json!({
        "scenario": "callback",
        "ok": accepted == sent && delivered == accepted && accepted > 0,
        "throughput_per_s": stats::rate(accepted, elapsed),
        "params": {"connections": args.connections, "callers": args.callers, "posts": posts, "pad_bytes": pad},
        "gateway": {
            "posts": sent,
            "accepted": accepted,
            "statuses": statuses,
            "first_error": first_error,
            "elapsed_s": round2(elapsed),
            "posts_per_s": stats::rate(accepted, elapsed),
            "post_latency": stats::summary(&all),
            "delivered": delivered,
            "delivery_latency": stats::summary(&deliveries.posts.latency.merged()),
        },
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let g = &v["gateway"];
    let mut t = Table::new(
        format!(
            "callback: {} posts from {} callers to {} connections: {} posts/s, {} of {} delivered",
            num(&g["posts"]),
            num(&v["params"]["callers"]),
            num(&v["params"]["connections"]),
            num(&g["posts_per_s"]),
            num(&g["delivered"]),
            num(&g["accepted"]),
        ),
        &latency_header(&["latency"]),
    );
    t.row("POST (request to 200)", latency_cells(&g["post_latency"]));
    t.row(
        "delivery (POST sent to frame read)",
        latency_cells(&g["delivery_latency"]),
    );
    t
}
