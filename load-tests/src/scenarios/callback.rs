//! `callback`: POST /@connections/{id} from several callers (each one keep-alive HTTP/1.1
//! connection, one request at a time) to many connections round-robin; POST throughput and
//! latency (request to 200), and delivery latency (timestamp in the payload to the frame
//! arriving at the client).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Common;
use crate::client::{self, HttpConn, SourceAddrs};
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
    let tasks: Vec<_> = (0..args.callers.max(1))
        .map(|_| {
            let (tickets, ids) = (tickets.clone(), ids.clone());
            tokio::spawn(async move {
                let mut http = HttpConn::new(management);
                let mut hist = stats::histogram();
                let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                let mut first_error = None::<String>;
                loop {
                    let i = tickets.fetch_add(1, Ordering::Relaxed);
                    if i >= posts || Instant::now() > deadline {
                        break;
                    }
                    let path = format!("/@connections/{}", ids[i % ids.len()]);
                    let body = Bytes::from(stats::stamp(KIND_POST, pad));
                    let sent = Instant::now();
                    let key = match http.request(hyper::Method::POST, &path, body).await {
                        Ok((status, _)) => {
                            if status == 200 {
                                stats::record(&mut hist, sent.elapsed().as_micros() as u64);
                            }
                            status.to_string()
                        }
                        Err(e) => {
                            first_error.get_or_insert(format!("{e:#}"));
                            "error".to_owned()
                        }
                    };
                    *statuses.entry(key).or_default() += 1;
                }
                (hist, statuses, first_error)
            })
        })
        .collect();
    let mut all = stats::histogram();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error = None;
    for task in tasks {
        let (hist, s, fe) = task.await?;
        let _ = all.add(&hist);
        for (k, n) in s {
            *statuses.entry(k).or_default() += n;
        }
        first_error = first_error.or(fe);
    }
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
