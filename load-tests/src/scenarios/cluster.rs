//! `cluster`: three gateway nodes sharing a throwaway redis-server. Cross-node POST: callers
//! post at a fixed total rate, each to node i's management API for connections owned by node
//! i+1, and a caller that falls behind schedule has its latency counted from each request's
//! *scheduled* time (so a stall shows up instead of hiding); then every connection joins one group and broadcasts posted
//! to node 0 reach members on all nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Common, broadcasts, post_to_group};
use crate::client::{self, HttpConn, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, Redis, gateway_binary};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Deliveries, KIND_POST, round2};

/// `loadgen cluster` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Gateway nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Clients connected to each node.
    #[arg(long, default_value_t = 1000)]
    pub connections_per_node: usize,
    /// Cross-node POSTs per second, all callers together.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Concurrent callers (each one keep-alive connection).
    #[arg(long, default_value_t = 32)]
    pub callers: usize,
    /// Timed broadcasts to the group spanning all nodes.
    #[arg(long, default_value_t = 3)]
    pub broadcasts: usize,
}

/// Starts `n` nodes on `toml` and waits until each is ready.
pub async fn start_nodes(binary: &std::path::Path, toml: &str, n: usize) -> Result<Vec<Gateway>> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Gateway::start_toml(binary, toml)?);
    }
    for node in &nodes {
        ready(node.management_addr).await?;
    }
    Ok(nodes)
}

/// Waits until `GET /readyz` answers 200 (Redis connected).
pub async fn ready(management: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut http = HttpConn::new(management);
    loop {
        if let Ok((200, _)) = http
            .request(hyper::Method::GET, "/readyz", Bytes::new())
            .await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {management} not ready within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Open-loop cross-node POSTs.
async fn cross_node_posts(
    managements: &[SocketAddr],
    ids: &[Arc<Vec<String>>],
    args: &Args,
) -> Result<Value> {
    let callers = args.callers.max(1);
    let rate = args.rate.max(1) as f64;
    let interval = Duration::from_secs_f64(callers as f64 / rate);
    let duration = Duration::from_secs(args.duration_secs);
    let hard_stop = Instant::now() + args.common.limit();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let nodes = managements.len();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let from = c % nodes;
            let management = managements[from];
            let targets = ids[(from + 1) % nodes].clone();
            tokio::spawn(async move {
                let mut http = HttpConn::new(management);
                let (mut scheduled, mut service) = (stats::histogram(), stats::histogram());
                let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
                let mut first_error = None::<String>;
                // Callers are staggered over one interval.
                let offset = interval.mul_f64(c as f64 / callers as f64);
                for k in 0u32.. {
                    let due = start + offset + interval * k;
                    if due > start + duration || Instant::now() > hard_stop {
                        break;
                    }
                    // Behind schedule (the previous request overran): count from when this
                    // one was due. On time: sleep, and count from the wake-up, so the
                    // timer's millisecond granularity is not charged to the gateway.
                    let behind = tokio::time::Instant::now() >= due;
                    if !behind {
                        tokio::time::sleep_until(due).await;
                    }
                    let origin = if behind {
                        due
                    } else {
                        tokio::time::Instant::now()
                    };
                    let id = &targets[(k as usize * callers + c) % targets.len()];
                    let body = Bytes::from(stats::stamp(KIND_POST, 32));
                    let sent = tokio::time::Instant::now();
                    let path = format!("/@connections/{id}");
                    let key = match http.request(hyper::Method::POST, &path, body).await {
                        Ok((status, _)) => {
                            if status == 200 {
                                stats::record(&mut scheduled, origin.elapsed().as_micros() as u64);
                                stats::record(&mut service, sent.elapsed().as_micros() as u64);
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
                (scheduled, service, statuses, first_error)
            })
        })
        .collect();
    let (mut scheduled, mut service) = (stats::histogram(), stats::histogram());
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error = None;
    for task in tasks {
        let (a, b, s, fe) = task.await?;
        let _ = scheduled.add(&a);
        let _ = service.add(&b);
        for (k, n) in s {
            *statuses.entry(k).or_default() += n;
        }
        first_error = first_error.or(fe);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent: u64 = statuses.values().sum();
    Ok(json!({
        "target_rate": args.rate,
        "posts": sent,
        "accepted": scheduled.len(),
        "statuses": statuses,
        "first_error": first_error,
        "elapsed_s": round2(elapsed),
        "achieved_rate": stats::rate(scheduled.len(), elapsed),
        "latency": stats::summary(&scheduled),
        "service_latency": stats::summary(&service),
    }))
}

/// Starts Redis and the nodes, then runs both phases.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (the POSTs are cross-node)");
    }
    let redis = Redis::start()?;
    let config = GatewayConfig {
        redis: Some((redis.url.clone(), format!("lg{}", std::process::id()))),
        ..GatewayConfig::echo()
    };
    let mut nodes = start_nodes(&binary, &config.toml(), args.nodes).await?;
    let managements: Vec<SocketAddr> = nodes.iter().map(|n| n.management_addr).collect();
    let sources = SourceAddrs::fresh();
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for node in &nodes {
        let members =
            client::connect_members(node.client_addr, args.connections_per_node, 64, &sources)
                .await?;
        let (c, i): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        clients.extend(c);
        ids.push(Arc::new(i));
    }
    let deliveries = Arc::new(Deliveries::new(args.broadcasts + 1));
    let _readers = client::spawn_readers(clients, &deliveries);

    let mut posts = cross_node_posts(&managements, &ids, args).await?;
    let accepted = posts["accepted"].as_u64().unwrap_or(0);
    let wait_until = Instant::now() + Duration::from_secs(10);
    while deliveries.posts.count() < accepted && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    posts["delivered"] = json!(deliveries.posts.count());
    posts["delivery_latency"] = stats::summary(&deliveries.posts.latency.merged());

    let mut joined = 0;
    for (management, node_ids) in managements.iter().zip(&ids) {
        joined += client::join_group(*management, "everyone", node_ids, 4).await?;
    }
    let members = (args.nodes * args.connections_per_node) as u64;
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    let broadcast = broadcasts(
        post_to_group(managements[0], "everyone"),
        members,
        args.broadcasts,
        32,
        &deliveries,
        Duration::from_secs(args.common.max_secs.min(30)),
        &pids,
    )
    .await?
    .json();
    for node in &mut nodes {
        node.check_alive()?;
    }
    drop(nodes);
    drop(redis);
    Ok(json!({
        "scenario": "cluster",
        "ok": posts["posts"] == posts["accepted"] && posts["delivered"] == posts["accepted"]
            && broadcast["delivered"] == broadcast["expected"] && joined as u64 == members,
        "throughput_per_s": posts["achieved_rate"],
        "params": {"nodes": args.nodes, "connections_per_node": args.connections_per_node,
                   "rate": args.rate, "duration_secs": args.duration_secs,
                   "callers": args.callers, "broadcasts": args.broadcasts},
        "cross_node_post": posts,
        "broadcast": broadcast,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let p = &v["cross_node_post"];
    let b = &v["broadcast"];
    let mut t = Table::new(
        format!(
            "cluster: {} nodes x {} clients; cross-node POST {} /s (target {}), {} of {} delivered; broadcast to {}: {} deliveries/s, {} of {} delivered",
            num(&v["params"]["nodes"]),
            num(&v["params"]["connections_per_node"]),
            num(&p["achieved_rate"]),
            num(&p["target_rate"]),
            num(&p["delivered"]),
            num(&p["accepted"]),
            num(&b["members"]),
            num(&b["deliveries_per_s"]),
            num(&b["delivered"]),
            num(&b["expected"]),
        ),
        &latency_header(&["latency"]),
    );
    t.row(
        "cross-node POST (from schedule)",
        latency_cells(&p["latency"]),
    );
    t.row(
        "cross-node POST (from send)",
        latency_cells(&p["service_latency"]),
    );
    t.row(
        "cross-node POST delivery",
        latency_cells(&p["delivery_latency"]),
    );
    t.row(
        "broadcast delivery (all nodes)",
        latency_cells(&b["delivery_latency"]),
    );
    t
}
