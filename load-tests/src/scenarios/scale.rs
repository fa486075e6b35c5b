//! `scale`: what each gateway node receives from the backplane, and what the backplane can
//! carry, as nodes are added (issue 13).
//!
//! 1. **Bytes per group message**, with 1, 2, 4 and 8 nodes (`--nodes`), each count on a
//!    fresh redis-server: every member of one group is on node 0; group broadcasts are
//!    POSTed to the management API of the last node (a non-member when there are two or
//!    more), and each node's `switchboard_backplane_bytes_total{direction="in",kind="group"}`
//!    and `…_messages_total` are scraped from its `/metrics` before and after. Reported:
//!    bytes received per group message by the member node and by each non-member node, the
//!    posting node's bytes out, and Redis's own `total_net_output_bytes` per message. The
//!    verdict ([`interest_verdict`]): non-member nodes receive 0 bytes per group message at
//!    every node count, so the figure does not grow with N.
//! 2. **Bytes by kind** at the largest node count: cross-node `POST /@connections/{id}`
//!    (the request as the owner receives it, the reply as the asker receives it) and
//!    `POST /@broadcast` (what every node receives).
//! 3. **Redis memory per record**: one node on a fresh redis-server; `INFO memory`
//!    `used_memory` before and after M connections are recorded, after each joins a group of
//!    `--memory-group-size`, and after all join one large group; delta ÷ M, with each key's
//!    encoding (`OBJECT ENCODING`), since small hashes and sorted sets are packed.
//! 4. **Cross-node group throughput, one Redis against a Redis Cluster**: `--tp-nodes`
//!    nodes; members of `--tp-groups` groups on every node but node 0; `--tp-callers`
//!    callers POST group broadcasts through node 0 in a closed loop for `--tp-secs`. Once
//!    on a redis-server, once on a Redis Cluster of three masters and three replicas started
//!    on loopback (`redis-server --cluster-enabled yes`, `redis-cli --cluster create`),
//!    with the nodes configured by `cluster.redis_cluster_nodes`. When the cluster half
//!    cannot run (no `redis-cli`, the cluster does not form, or the gateway rejects the
//!    configuration) it is reported as not measured, with the reason, and the run goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::Common;
use super::cluster::start_nodes;
use crate::client::{self, HttpConn, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, Redis, cpu_us, free_port, gateway_binary, rss_kib};
use crate::report::{Table, num};
use crate::stats::{self, Deliveries, KIND_POST, round2};

/// `loadgen scale` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Node counts of the bytes phase (comma-separated), each on a fresh redis-server.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub nodes: Vec<usize>,
    /// Members of the measured group, all connected to node 0.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Group broadcasts per node count.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Cross-node POSTs and broadcasts to all, at the largest node count (bytes by kind).
    #[arg(long, default_value_t = 50)]
    pub kind_messages: usize,
    /// Bytes of each payload (a timestamp stamp padded to this length), so bytes per
    /// message minus this is the backplane's envelope.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Connections recorded in Redis for the memory phase (0: skip it).
    #[arg(long, default_value_t = 5000)]
    pub memory_connections: usize,
    /// Members per group in the memory phase's first join.
    #[arg(long, default_value_t = 100)]
    pub memory_group_size: usize,
    /// Gateway nodes of the throughput phase (POSTs through node 0, members on the others).
    #[arg(long, default_value_t = 3)]
    pub tp_nodes: usize,
    /// Groups of the throughput phase (spread over the cluster's hash slots).
    #[arg(long, default_value_t = 12)]
    pub tp_groups: usize,
    /// Members of each group on each member node.
    #[arg(long, default_value_t = 5)]
    pub tp_members: usize,
    /// Concurrent callers of the throughput phase (each one keep-alive connection).
    #[arg(long, default_value_t = 16)]
    pub tp_callers: usize,
    /// Seconds of posting in the throughput phase, per backend.
    #[arg(long, default_value_t = 10)]
    pub tp_secs: u64,
    /// Rounds of the throughput phase, alternating one Redis and the Redis Cluster.
    #[arg(long, default_value_t = 2)]
    pub tp_rounds: usize,
    /// Skip the Redis Cluster half of the throughput phase.
    #[arg(long)]
    pub no_redis_cluster: bool,
}

/// The group every member of the bytes phase joins.
const GROUP: &str = "scale";

/// How a check of this scenario came out (in the JSON: `"pass"`, `"fail"`, `"not measured"`).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Met.
    Pass,
    /// Missed, and why.
    Fail(String),
    /// Could not be decided, and why.
    NotMeasured(String),
}

impl Outcome {
    /// `{"verdict": …, "why": …}`.
    pub fn json(&self) -> Value {
        match self {
            Outcome::Pass => json!({"verdict": "pass", "why": Value::Null}),
            Outcome::Fail(why) => json!({"verdict": "fail", "why": why}),
            Outcome::NotMeasured(why) => json!({"verdict": "not measured", "why": why}),
        }
    }
}

/// The interest verdict from `(nodes, bytes per group message received by the non-member
/// nodes together)` for each node count: with two or more nodes the non-members' figure
/// must be exactly 0 (a group broadcast reaches only nodes holding a member), and it must
/// not grow from one node count to the next.
pub fn interest_verdict(rows: &[(usize, f64)]) -> Outcome {
    let mut rows: Vec<(usize, f64)> = rows.iter().copied().filter(|r| r.0 >= 2).collect();
    rows.sort_by_key(|r| r.0);
    if rows.is_empty() {
        return Outcome::NotMeasured("no node count with a non-member node (need ≥ 2)".into());
    }
    let mut problems = Vec::new();
    for (nodes, bytes) in &rows {
        if *bytes != 0.0 {
            problems.push(format!(
                "{nodes} nodes: non-members received {bytes} B per message"
            ));
        }
    }
    for pair in rows.windows(2) {
        if pair[1].1 > pair[0].1 {
            problems.push(format!(
                "grows with N: {} B at {} nodes, {} B at {}",
                pair[0].1, pair[0].0, pair[1].1, pair[1].0
            ));
        }
    }
    if problems.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(problems.join("; "))
    }
}

/// The value of the series `name` carrying `labels` (other labels, such as the global
/// `api_id`, are ignored) in a Prometheus exposition text; 0 when the series is absent (a
/// counter not yet incremented is not exported).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue, // a longer name with this prefix
        };
        let found: Vec<(&str, &str)> = series
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|l| found.contains(l))
            && let Some(v) = value.split_whitespace().next().and_then(|v| v.parse().ok())
        {
            return v;
        }
    }
    0.0
}

/// One node's backplane counters at one moment: (messages, bytes) by (direction, kind).
#[derive(Clone, Default)]
struct Counters(BTreeMap<(&'static str, &'static str), (f64, f64)>);

impl Counters {
    const KINDS: [&'static str; 4] = ["request", "reply", "group", "broadcast"];

    fn parse(text: &str) -> Counters {
        let mut map = BTreeMap::new();
        for direction in ["in", "out"] {
            for kind in Self::KINDS {
                let labels = [("direction", direction), ("kind", kind)];
                map.insert(
                    (direction, kind),
                    (
                        counter(text, "switchboard_backplane_messages_total", &labels),
                        counter(text, "switchboard_backplane_bytes_total", &labels),
                    ),
                );
            }
        }
        Counters(map)
    }

    /// (messages, bytes) of `direction`/`kind` since `before`.
    fn since(&self, before: &Counters, direction: &str, kind: &str) -> (f64, f64) {
        let get = |c: &Counters| {
            c.0.iter()
                .find(|((d, k), _)| *d == direction && *k == kind)
                .map(|(_, v)| *v)
                .unwrap_or_default()
        };
        let (a, b) = (get(before), get(self));
        (b.0 - a.0, b.1 - a.1)
    }
}

/// GET /metrics of one node.
async fn scrape(management: SocketAddr) -> Result<String> {
    let (status, body) = HttpConn::new(management)
        .request(hyper::Method::GET, "/metrics", Bytes::new())
        .await?;
    if status != 200 {
        bail!("GET /metrics on {management} answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn scrape_all(managements: &[SocketAddr]) -> Result<Vec<Counters>> {
    let mut all = Vec::new();
    for m in managements {
        all.push(Counters::parse(&scrape(*m).await?));
    }
    Ok(all)
}

/// Runs `redis-cli -p <port> <args…>` and returns its output.
fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli (install it: apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One numeric field of `INFO <section>`.
fn info_field(port: u16, section: &str, field: &str) -> Result<f64> {
    let text = redis_cli(port, &["INFO", section])?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in INFO {section} on port {port}"))
}

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in {url}"))
}

/// POSTs `body` to `path` and requires `want`.
async fn post(http: &mut HttpConn, path: &str, body: String, want: u16) -> Result<()> {
    let (status, answer) = http
        .request(hyper::Method::POST, path, Bytes::from(body))
        .await?;
    if status != want {
        bail!(
            "POST {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

/// Waits until `deliveries` counted `want` POST-kind arrivals (or 10 s).
async fn await_deliveries(deliveries: &Deliveries, want: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    while deliveries.posts.count() < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    deliveries.posts.count()
}

/// A POST-kind [`stats::stamp`] padded to exactly `bytes` (when that is enough room): the
/// timestamp's digits grow with the run time, the padding makes up for them.
fn payload(bytes: usize) -> String {
    let head = format!("{{\"t\":{},\"k\":{KIND_POST},\"pad\":\"", stats::now_ns());
    let pad = bytes.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// Bytes per message, 2 decimals.
fn per(bytes: f64, messages: usize) -> f64 {
    round2(bytes / messages.max(1) as f64)
}

/// Phase 1 (and 2 when `kinds`): `n` nodes on a fresh redis-server.
async fn bytes_at(binary: &Path, args: &Args, n: usize, kinds: bool) -> Result<Value> {
    let redis = Redis::start()?;
    let redis_port = port_of(&redis.url)?;
    let config = GatewayConfig {
        redis: Some((redis.url.clone(), format!("lgs{}n{n}", std::process::id()))),
        ..GatewayConfig::echo()
    };
    let mut nodes = start_nodes(binary, &config.toml(), n).await?;
    let managements: Vec<SocketAddr> = nodes.iter().map(|g| g.management_addr).collect();
    let members = client::connect_members(
        nodes[0].client_addr,
        args.members,
        32,
        &SourceAddrs::fresh(),
    )
    .await?;
    let (clients, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let joined = client::join_group(managements[0], GROUP, &ids, 4).await?;
    let deliveries = Arc::new(Deliveries::new(0));
    let _readers = client::spawn_readers(clients, &deliveries);
    let poster = n - 1;
    let mut http = HttpConn::new(managements[poster]);
    let payload_bytes = payload(args.payload_bytes).len();

    let before = scrape_all(&managements).await?;
    let redis_before = info_field(redis_port, "stats", "total_net_output_bytes")?;
    let redis_cpu = cpu_us(redis.pid())?;
    let path = format!("/@groups/{GROUP}");
    for _ in 0..args.messages {
        post(&mut http, &path, payload(args.payload_bytes), 202).await?;
    }
    let expected = (args.messages * args.members) as u64;
    let delivered = await_deliveries(&deliveries, expected).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis_cpu = cpu_us(redis.pid())? - redis_cpu;
    let after = scrape_all(&managements).await?;
    let redis_out = info_field(redis_port, "stats", "total_net_output_bytes")? - redis_before;

    let group_in: Vec<(f64, f64)> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.since(b, "in", "group"))
        .collect();
    let others: Vec<f64> = group_in[1..]
        .iter()
        .map(|(_, b)| per(*b, args.messages))
        .collect();
    // fold from +0.0: an empty f64 sum is -0.0, which would print as "-0".
    let others_sum = group_in[1..].iter().fold(0.0, |a, (_, b)| a + b);
    let others_msgs = group_in[1..].iter().fold(0.0, |a, (m, _)| a + m);
    let mut row = json!({
        "nodes": n,
        "messages": args.messages,
        "members": args.members,
        "joined": joined,
        "payload_bytes": payload_bytes,
        "expected": expected,
        "delivered": delivered,
        "member_bytes_per_msg": per(group_in[0].1, args.messages),
        "member_msgs_per_msg": per(group_in[0].0, args.messages),
        "nonmember_bytes_per_msg": others,
        "nonmember_max_bytes_per_msg": others.iter().copied().fold(0.0, f64::max),
        "nonmember_total_bytes_per_msg": per(others_sum, args.messages),
        "nonmember_msgs": others_msgs,
        "poster_out_bytes_per_msg": per(after[poster].since(&before[poster], "out", "group").1, args.messages),
        "redis_out_bytes_per_msg": per(redis_out, args.messages),
        "redis_cpu_us_per_msg": per(redis_cpu as f64, args.messages),
    });

    if kinds && n >= 2 && args.kind_messages > 0 {
        row["kinds"] = kind_bytes(
            &managements,
            &ids,
            args,
            &deliveries,
            delivered,
            (redis_port, redis.pid()),
        )
        .await?;
    }
    for node in &mut nodes {
        node.check_alive()?;
    }
    drop(nodes);
    drop(redis);
    Ok(row)
}

/// Phase 2: bytes per cross-node POST and per broadcast to all, posted through the last
/// node to node 0's members.
async fn kind_bytes(
    managements: &[SocketAddr],
    ids: &[String],
    args: &Args,
    deliveries: &Deliveries,
    delivered_so_far: u64,
    (redis_port, redis_pid): (u16, u32),
) -> Result<Value> {
    let k = args.kind_messages;
    let poster = managements.len() - 1;
    let mut http = HttpConn::new(managements[poster]);

    let before = scrape_all(managements).await?;
    let redis_before = info_field(redis_port, "stats", "total_net_output_bytes")?;
    for i in 0..k {
        let path = format!("/@connections/{}", ids[i % ids.len()]);
        post(&mut http, &path, payload(args.payload_bytes), 200).await?;
    }
    let post_delivered =
        await_deliveries(deliveries, delivered_so_far + k as u64).await - delivered_so_far;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mid = scrape_all(managements).await?;
    let redis_mid = info_field(redis_port, "stats", "total_net_output_bytes")?;
    let cpu_mid = cpu_us(redis_pid)?;
    for _ in 0..k {
        post(&mut http, "/@broadcast", payload(args.payload_bytes), 202).await?;
    }
    let want = delivered_so_far + (k + k * ids.len()) as u64;
    let all_delivered =
        await_deliveries(deliveries, want).await - delivered_so_far - post_delivered;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_after = cpu_us(redis_pid)?;
    let after = scrape_all(managements).await?;
    let redis_after = info_field(redis_port, "stats", "total_net_output_bytes")?;

    let broadcast_in: Vec<f64> = after
        .iter()
        .zip(&mid)
        .map(|(a, b)| per(a.since(b, "in", "broadcast").1, k))
        .collect();
    Ok(json!({
        "messages": k,
        "cross_node_post": {
            "delivered": post_delivered,
            "request_in_bytes_per_msg": per(mid[0].since(&before[0], "in", "request").1, k),
            "request_out_bytes_per_msg": per(mid[poster].since(&before[poster], "out", "request").1, k),
            "reply_in_bytes_per_msg": per(mid[poster].since(&before[poster], "in", "reply").1, k),
            "reply_out_bytes_per_msg": per(mid[0].since(&before[0], "out", "reply").1, k),
            "redis_out_bytes_per_msg": per(redis_mid - redis_before, k),
        },
        "broadcast_all": {
            "expected": k * ids.len(),
            "delivered": all_delivered,
            "in_bytes_per_msg_by_node": broadcast_in,
            "out_bytes_per_msg": per(after[poster].since(&mid[poster], "out", "broadcast").1, k),
            "redis_out_bytes_per_msg": per(redis_after - redis_mid, k),
            "redis_cpu_us_per_msg": per((cpu_after - cpu_mid) as f64, k),
        },
    }))
}

/// Waits until `key`'s count (by `cmd`: HLEN, SCARD…) reaches `want` (or 30 s).
fn await_count(port: u16, cmd: &str, key: &str, want: usize) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let n: usize = redis_cli(port, &[cmd, key])?.parse().unwrap_or(0);
        if n >= want {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{cmd} {key} = {n} after 30 s, want {want}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `used_memory` and `used_memory_dataset` after a short settle.
fn memory(port: u16) -> Result<(f64, f64)> {
    std::thread::sleep(Duration::from_millis(300));
    Ok((
        info_field(port, "memory", "used_memory")?,
        info_field(port, "memory", "used_memory_dataset")?,
    ))
}

/// Phase 3: Redis memory per connection record and per group membership.
async fn redis_memory(binary: &Path, args: &Args) -> Result<Value> {
    let m = args.memory_connections;
    let redis = Redis::start()?;
    let port = port_of(&redis.url)?;
    let prefix = format!("lgm{}", std::process::id());
    let config = GatewayConfig {
        redis: Some((redis.url.clone(), prefix.clone())),
        ..GatewayConfig::echo()
    };
    // Node 1 holds no connection: it only remembers node 0's records (for reaping).
    let mut nodes = start_nodes(binary, &config.toml(), 2).await?;
    let node = &nodes[0];
    let watcher = nodes[1].management_addr;
    let watcher_rss_before = rss_kib(nodes[1].pid())?;
    let m0 = memory(port)?;
    let cpu0 = cpu_us(redis.pid())?;
    let members = client::connect_members(node.client_addr, m, 32, &SourceAddrs::fresh()).await?;
    let conns_key = redis_cli(port, &["--scan", "--pattern", &format!("{prefix}:*:conns")])?;
    if conns_key.is_empty() || conns_key.contains('\n') {
        bail!("expected one connection-record hash, found {conns_key:?}");
    }
    await_count(port, "HLEN", &conns_key, m)?;
    let ids_key = conns_key.replace(":conns", ":ids");
    await_count(port, "ZCARD", &ids_key, m)?;
    let cpu1 = cpu_us(redis.pid())?;
    let m1 = memory(port)?;
    // The other node re-reads node 0's records at most once per two lease TTLs (10 s).
    let until = Instant::now() + Duration::from_secs(30);
    let mut remembered = (0.0, 0.0);
    while Instant::now() < until {
        let text = scrape(watcher).await?;
        remembered = (
            counter(&text, "switchboard_backplane_remembered_connections", &[]),
            counter(&text, "switchboard_backplane_remembered_bytes", &[]),
        );
        if remembered.0 >= m as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let watcher_rss = rss_kib(nodes[1].pid())?;

    let (clients, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
    let size = args.memory_group_size.max(1);
    let cpu2 = cpu_us(redis.pid())?;
    let mut groups = 0;
    for (g, chunk) in ids.chunks(size).enumerate() {
        client::join_group(node.management_addr, &format!("m{g}"), chunk, 4).await?;
        groups += 1;
    }
    let memberships_key = conns_key.replace(":conns", ":memberships");
    await_count(port, "SCARD", &memberships_key, m)?;
    await_count(
        port,
        "ZCARD",
        &format!("{prefix}:{{g.m0}}:members"),
        ids.len().min(size),
    )?;
    let cpu3 = cpu_us(redis.pid())?;
    let m2 = memory(port)?;
    client::join_group(node.management_addr, "big", &ids, 4).await?;
    await_count(port, "SCARD", &memberships_key, 2 * m)?;
    let big_key = format!("{prefix}:{{g.big}}:members");
    await_count(port, "ZCARD", &big_key, m)?;
    let m3 = memory(port)?;
    let encoding = |key: &str| redis_cli(port, &["OBJECT", "ENCODING", key]).unwrap_or_default();
    let record_sample = redis_cli(port, &["HGET", &conns_key, &ids[0]]).unwrap_or_default();
    // What a survivor's re-read of another node's records costs Redis: HGETALL of the
    // hash, 20 times (the survivors page through it with HSCAN; the entries are the same).
    let reads = 20;
    let (cpu_r, out_r) = (
        cpu_us(redis.pid())?,
        info_field(port, "stats", "total_net_output_bytes")?,
    );
    redis_cli(port, &["-r", &reads.to_string(), "HGETALL", &conns_key])?;
    let (cpu_r, out_r) = (
        cpu_us(redis.pid())? - cpu_r,
        info_field(port, "stats", "total_net_output_bytes")? - out_r,
    );
    let result = json!({
        "connections": m,
        "group_size": size,
        "groups": groups,
        "used_memory": [m0.0, m1.0, m2.0, m3.0],
        "used_memory_dataset": [m0.1, m1.1, m2.1, m3.1],
        "bytes_per_connection_record": per(m1.0 - m0.0, m),
        "dataset_bytes_per_connection_record": per(m1.1 - m0.1, m),
        "bytes_per_membership_small_groups": per(m2.0 - m1.0, m),
        "bytes_per_membership_one_large_group": per(m3.0 - m2.0, m),
        "record_json_bytes": record_sample.len(),
        "redis_cpu_us_per_connection_record_write": per((cpu1 - cpu0) as f64, m),
        "redis_cpu_us_per_membership_write": per((cpu3 - cpu2) as f64, m),
        "record_read": {
            "reads": reads,
            "redis_cpu_us_per_record": round2(cpu_r as f64 / (reads * m) as f64),
            "redis_out_bytes_per_record": round2(out_r / (reads * m) as f64),
        },
        "other_node_remembers": {
            "connections": remembered.0,
            "bytes_per_connection": per(remembered.1, m),
            "rss_kib_before": watcher_rss_before,
            "rss_kib_after": watcher_rss,
            "rss_bytes_per_connection": per((watcher_rss as f64 - watcher_rss_before as f64) * 1024.0, m),
        },
        "encodings": {
            "conns": encoding(&conns_key),
            "ids": encoding(&ids_key),
            "memberships": encoding(&memberships_key),
            "small_group_members": encoding(&format!("{prefix}:{{g.m0}}:members")),
            "large_group_members": encoding(&big_key),
        },
    });
    for node in &mut nodes {
        node.check_alive()?;
    }
    drop(clients);
    drop(nodes);
    drop(redis);
    Ok(result)
}

/// Where the throughput phase's nodes keep their state.
enum Backend {
    /// One redis-server at this URL.
    Single(String),
    /// A Redis Cluster with these seed URLs.
    Cluster(Vec<String>),
}

impl Backend {
    /// The `[cluster]` section for `prefix`.
    fn section(&self, prefix: &str) -> String {
        match self {
            Backend::Single(url) => {
                format!("\n[cluster]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\n")
            }
            Backend::Cluster(seeds) => format!(
                "\n[cluster]\nredis_cluster_nodes = [{}]\nkey_prefix = \"{prefix}\"\n",
                seeds
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A Redis Cluster on loopback: `masters` masters with one replica each, in a temporary
/// directory; every server is stopped and the directory removed on drop.
pub struct RedisCluster {
    children: Vec<Child>,
    /// Every server's port (masters and replicas).
    pub ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts `2 × masters` servers, creates the cluster and waits for `cluster_state:ok`
    /// on every server.
    pub fn start(masters: usize) -> Result<RedisCluster> {
        let dir = std::env::temp_dir().join(format!("loadgen-rc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..masters * 2 {
            let port = cluster_port(&cluster.ports)?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "3000"])
                .arg("--dir")
                .arg(&cluster.dir)
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server --cluster-enabled yes")?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for port in &cluster.ports {
            let until = Instant::now() + Duration::from_secs(10);
            while redis_cli(*port, &["PING"])
                .map(|p| p != "PONG")
                .unwrap_or(true)
            {
                if Instant::now() > until {
                    bail!("redis-server on port {port} did not answer PING within 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let until = Instant::now() + Duration::from_secs(30);
        for port in &cluster.ports {
            loop {
                let info = redis_cli(*port, &["CLUSTER", "INFO"]).unwrap_or_default();
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                if Instant::now() > until {
                    bail!("the Redis Cluster did not reach cluster_state:ok within 30 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` of every server.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The servers' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Each server's role now (`master`, `slave`), in the order of [`RedisCluster::ports`].
    pub fn roles(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| {
                redis_cli(*p, &["ROLE"])
                    .ok()
                    .and_then(|r| r.lines().next().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The ports of the current masters.
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| {
                redis_cli(*p, &["ROLE"])
                    .map(|r| r.starts_with("master"))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10000) is free too, not in `taken`.
fn cluster_port(taken: &[u16]) -> Result<u16> {
    for _ in 0..200 {
        let port = free_port()?;
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (P, P+10000) found for a Redis Cluster node")
}

/// Phase 4 on one backend: cross-node group broadcasts, closed loop, through node 0.
/// One round of phase 4 on one backend: its counts, and its latencies to merge.
struct Round {
    counts: Value,
    post: hdrhistogram::Histogram<u64>,
    delivery: hdrhistogram::Histogram<u64>,
}

/// `INFO commandstats` as command → (calls, µs Redis spent in it).
pub fn commandstats(text: &str) -> BTreeMap<String, (f64, f64)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, fields) = l.split_once(':')?;
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((name.to_owned(), (field("calls")?, field("usec")?)))
        })
        .collect()
}

/// Per command, over every round: calls and Redis µs per accepted post (only commands
/// called at least once per 100 posts).
fn commands_per_post(rounds: &[Round], accepted: f64) -> Value {
    let mut total: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in rounds {
        for (name, v) in r.counts["commands"].as_object().into_iter().flatten() {
            let e = total.entry(name.clone()).or_default();
            e.0 += v[0].as_f64().unwrap_or(0.0);
            e.1 += v[1].as_f64().unwrap_or(0.0);
        }
    }
    let accepted = accepted.max(1.0);
    total
        .into_iter()
        .filter(|(_, (calls, _))| calls / accepted >= 0.01)
        .map(|(name, (calls, usec))| {
            let calls_pp = round2(calls / accepted);
            let usec_pp = round2(usec / accepted);
            (name, json!({"calls": calls_pp, "usec": usec_pp}))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Rounds on one backend added up: rates over the summed time, CPU per post over the
/// summed posts, latency over every post and delivery.
fn merge_rounds(rounds: &[Round]) -> Value {
    let sum = |key: &str| {
        rounds
            .iter()
            .map(|r| r.counts[key].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    let (mut post, mut delivery) = (stats::histogram(), stats::histogram());
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for r in rounds {
        let _ = post.add(&r.post);
        let _ = delivery.add(&r.delivery);
        for (k, n) in r.counts["statuses"].as_object().into_iter().flatten() {
            *statuses.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    let first = rounds.first().map(|r| &r.counts).unwrap_or(&Value::Null);
    let mut by_server: Vec<u64> = Vec::new();
    for r in rounds {
        let cpu = r.counts["redis_cpu_us_by_server"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        by_server.resize(by_server.len().max(cpu.len()), 0);
        for (total, us) in by_server.iter_mut().zip(cpu) {
            *total += us.as_u64().unwrap_or(0);
        }
    }
    let (accepted, elapsed) = (sum("accepted"), sum("elapsed_s"));
    json!({
        "nodes": first["nodes"],
        "groups": first["groups"],
        "members_per_group": first["members_per_group"],
        "callers": first["callers"],
        "rounds": rounds.len(),
        "posts": sum("posts"),
        "accepted": accepted,
        "statuses": statuses,
        "first_error": rounds.iter().map(|r| &r.counts["first_error"]).find(|e| !e.is_null()),
        "elapsed_s": round2(elapsed),
        "posts_per_s": stats::rate(accepted as u64, elapsed),
        "deliveries_per_s": stats::rate(sum("delivered") as u64, elapsed),
        "expected": sum("expected"),
        "delivered": sum("delivered"),
        "redis_cpu_us_per_post": per(sum("redis_cpu_us"), accepted as usize),
        "gateways_cpu_us_per_post": per(sum("gateways_cpu_us"), accepted as usize),
        "redis_commands_per_post": commands_per_post(rounds, accepted),
        "redis_cpu_us_per_post_by_server": by_server
            .iter()
            .map(|us| per(*us as f64, accepted as usize))
            .collect::<Vec<_>>(),
        "posts_per_s_by_round": rounds.iter().map(|r| r.counts["posts_per_s"].clone()).collect::<Vec<_>>(),
        "post_latency": stats::summary(&post),
        "delivery_latency": stats::summary(&delivery),
    })
}

async fn throughput(
    binary: &Path,
    args: &Args,
    (backend, round): (&Backend, usize),
    (redis_pids, redis_ports): (&[u32], &[u16]),
) -> Result<Round> {
    let commands = || -> Result<BTreeMap<String, (f64, f64)>> {
        let mut all = BTreeMap::new();
        for port in redis_ports {
            for (name, (calls, usec)) in commandstats(&redis_cli(*port, &["INFO", "commandstats"])?)
            {
                let e: &mut (f64, f64) = all.entry(name).or_default();
                e.0 += calls;
                e.1 += usec;
            }
        }
        Ok(all)
    };
    let redis_cpu = || -> Result<Vec<u64>> { redis_pids.iter().map(|p| cpu_us(*p)).collect() };
    let prefix = format!("lgt{}r{round}", std::process::id());
    let toml = GatewayConfig::echo().toml() + &backend.section(&prefix);
    let n = args.tp_nodes.max(2);
    let mut nodes = start_nodes(binary, &toml, n).await?;
    let managements: Vec<SocketAddr> = nodes.iter().map(|g| g.management_addr).collect();
    // Ready means connected; the gauge follows at the next lease refresh (a third of the
    // lease TTL). Checked so a configuration that silently fell back to one node in memory
    // cannot pass for a backplane.
    for m in &managements {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let text = scrape(*m).await?;
            if counter(&text, "switchboard_backplane_connected", &[]) == 1.0 {
                break;
            }
            if Instant::now() > until {
                let line = text
                    .lines()
                    .find(|l| l.starts_with("switchboard_backplane_connected"))
                    .unwrap_or("no switchboard_backplane_connected");
                bail!("node {m} is not connected to its backplane after 10 s: {line}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let groups = args.tp_groups.max(1);
    let per_node = groups * args.tp_members;
    let mut clients = Vec::new();
    for node in &nodes[1..] {
        let members =
            client::connect_members(node.client_addr, per_node, 32, &SourceAddrs::fresh()).await?;
        let (c, ids): (Vec<_>, Vec<_>) = members.into_iter().unzip();
        clients.extend(c);
        for g in 0..groups {
            let chunk: Vec<String> = ids.iter().skip(g).step_by(groups).cloned().collect();
            client::join_group(node.management_addr, &format!("t{g}"), &chunk, 2).await?;
        }
    }
    let deliveries = Arc::new(Deliveries::new(0));
    let _readers = client::spawn_readers(clients, &deliveries);

    let callers = args.tp_callers.max(1);
    let duration = Duration::from_secs(args.tp_secs);
    let hard_stop = Instant::now() + args.common.limit();
    let gateways_cpu =
        |nodes: &[Gateway]| nodes.iter().map(|g| cpu_us(g.pid())).sum::<Result<u64>>();
    let cpu_start = (redis_cpu()?, gateways_cpu(&nodes)?);
    let commands_start = commands()?;
    let start = Instant::now();
    let payload_bytes = args.payload_bytes;
    let next = move |c: usize, i: usize| {
        if start.elapsed() > duration || Instant::now() > hard_stop {
            return None;
        }
        let path = format!("/@groups/t{}", (c + i * callers) % groups);
        Some((path, Bytes::from(payload(payload_bytes))))
    };
    let client::Posted {
        accepted: hist,
        statuses,
        first_error,
    } = client::post_closed_loop(managements[0], callers, 202, next).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_end = (redis_cpu()?, gateways_cpu(&nodes)?);
    let commands_end = commands()?;
    let accepted = hist.len();
    let per_post = (args.tp_members * (n - 1)) as u64;
    let expected = accepted * per_post;
    let delivered = await_deliveries(&deliveries, expected).await;
    for node in &mut nodes {
        node.check_alive()?;
    }
    drop(nodes);
    Ok(Round {
        counts: json!({
            "nodes": n,
            "groups": groups,
            "members_per_group": per_post,
            "callers": callers,
            "posts": statuses.values().sum::<u64>(),
            "accepted": accepted,
            "statuses": statuses,
            "first_error": first_error,
            "elapsed_s": elapsed,
            "posts_per_s": stats::rate(accepted, elapsed),
            "expected": expected,
            "delivered": delivered,
            "redis_cpu_us": cpu_end.0.iter().sum::<u64>() - cpu_start.0.iter().sum::<u64>(),
            "redis_cpu_us_by_server": cpu_end.0.iter().zip(&cpu_start.0).map(|(e, s)| e - s).collect::<Vec<_>>(),
            "gateways_cpu_us": cpu_end.1 - cpu_start.1,
            "commands": commands_end
                .iter()
                .map(|(name, (calls, usec))| {
                    let (c0, u0) = commands_start.get(name).copied().unwrap_or_default();
                    (name.clone(), json!([calls - c0, usec - u0]))
                })
                .filter(|(_, v)| v[0].as_f64() > Some(0.0))
                .collect::<serde_json::Map<_, _>>(),
        }),
        post: hist,
        delivery: deliveries.posts.latency.merged(),
    })
}

/// Why the cluster half did not run, from the error of starting it.
fn not_measured(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    // A gateway that rejects the configuration prints why on its last lines.
    text.lines()
        .rev()
        .find(|l| l.contains("redis_cluster_nodes") || l.contains("unknown field"))
        .map(|l| format!("the gateway rejected the configuration: {}", l.trim()))
        .unwrap_or(text)
}

/// Phase 4: `--tp-rounds` alternating rounds on one redis-server and on a Redis Cluster
/// (both kept up; fresh gateway nodes and key prefix each round), or why the cluster half
/// could not run.
async fn throughput_phase(binary: &Path, args: &Args) -> Result<(Value, Value)> {
    let redis = Redis::start()?;
    let single = Backend::Single(redis.url.clone());
    let mut cluster = if args.no_redis_cluster {
        Err("skipped (--no-redis-cluster)".to_owned())
    } else {
        RedisCluster::start(3).map_err(|e| format!("{e:#}"))
    };
    let backend = cluster.as_ref().ok().map(|c| Backend::Cluster(c.seeds()));
    let (mut ones, mut clusters) = (Vec::new(), Vec::new());
    for round in 0..args.tp_rounds.max(1) {
        let port = port_of(&redis.url)?;
        ones.push(throughput(binary, args, (&single, round), (&[redis.pid()], &[port])).await?);
        if let (Ok(c), Some(b)) = (&cluster, &backend) {
            match throughput(binary, args, (b, round), (&c.pids(), &c.ports)).await {
                Ok(r) => clusters.push(r),
                Err(e) => cluster = Err(not_measured(&e)),
            }
        }
    }
    let rc = match &cluster {
        Ok(c) if !clusters.is_empty() => {
            let mut v = merge_rounds(&clusters);
            v["measured"] = json!(true);
            v["masters"] = json!(c.masters().len());
            v["roles_by_server"] = json!(c.roles());
            v["servers"] = json!(c.ports.len());
            v
        }
        Ok(_) => json!({"measured": false, "why": "no round ran"}),
        Err(why) => json!({"measured": false, "why": why}),
    };
    Ok((merge_rounds(&ones), rc))
}

/// Runs every phase.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    if args.nodes.is_empty() || args.nodes.contains(&0) {
        bail!("--nodes needs one or more positive node counts");
    }
    if args.members == 0 || args.messages == 0 {
        bail!("--members and --messages must be positive");
    }
    let largest = args.nodes.iter().copied().max().unwrap_or(1);
    let mut rows = Vec::new();
    for &n in &args.nodes {
        rows.push(bytes_at(&binary, args, n, n == largest).await?);
    }
    let verdict = interest_verdict(
        &rows
            .iter()
            .map(|r| {
                (
                    r["nodes"].as_u64().unwrap_or(0) as usize,
                    r["nonmember_total_bytes_per_msg"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                )
            })
            .collect::<Vec<_>>(),
    );
    let memory = if args.memory_connections > 0 {
        redis_memory(&binary, args).await?
    } else {
        Value::Null
    };
    let (single, cluster) = throughput_phase(&binary, args).await?;
    let complete = |v: &Value| v["delivered"] == v["expected"];
    let kinds = rows
        .iter()
        .find_map(|r| r.get("kinds"))
        .cloned()
        .unwrap_or(Value::Null);
    let ok = rows
        .iter()
        .all(|r| complete(r) && r["joined"] == r["members"])
        && (kinds.is_null()
            || (kinds["cross_node_post"]["delivered"] == kinds["messages"]
                && complete(&kinds["broadcast_all"])))
        && !matches!(verdict, Outcome::Fail(_))
        && complete(&single)
        && (cluster["measured"] != true || complete(&cluster));
    Ok(json!({
        "scenario": "scale",
        "ok": ok,
        "throughput_per_s": single["posts_per_s"],
        "params": {
            "nodes": args.nodes, "members": args.members, "messages": args.messages,
            "kind_messages": args.kind_messages, "payload_bytes": args.payload_bytes,
            "memory_connections": args.memory_connections,
            "memory_group_size": args.memory_group_size,
            "tp_nodes": args.tp_nodes, "tp_groups": args.tp_groups,
            "tp_members": args.tp_members, "tp_callers": args.tp_callers,
            "tp_secs": args.tp_secs, "tp_rounds": args.tp_rounds,
        },
        "interest": verdict.json(),
        "by_nodes": rows,
        "kinds": kinds,
        "redis_memory": memory,
        "throughput": {
            "one_redis": single,
            "redis_cluster": cluster,
            "ratio_posts_per_s": stats::ratio(&cluster["posts_per_s"], &single["posts_per_s"]),
        },
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let t = &v["throughput"];
    let (one, rc) = (&t["one_redis"], &t["redis_cluster"]);
    let rc_text = if rc["measured"] == true {
        format!(
            "Redis Cluster ({} masters) {} posts/s ({} deliveries/s, POST p99 {} ms, Redis CPU {} µs/post), {}× one Redis",
            num(&rc["masters"]),
            num(&rc["posts_per_s"]),
            num(&rc["deliveries_per_s"]),
            num(&rc["post_latency"]["p99_ms"]),
            num(&rc["redis_cpu_us_per_post"]),
            num(&t["ratio_posts_per_s"]),
        )
    } else {
        format!(
            "Redis Cluster not measured: {}",
            rc["why"].as_str().unwrap_or("?")
        )
    };
    let m = &v["redis_memory"];
    let memory = if m.is_null() {
        "Redis memory not measured".to_owned()
    } else {
        format!(
            "Redis memory: {} B per connection record, {} B per membership (groups of {}), {} B (one group of {})",
            num(&m["bytes_per_connection_record"]),
            num(&m["bytes_per_membership_small_groups"]),
            num(&m["group_size"]),
            num(&m["bytes_per_membership_one_large_group"]),
            num(&m["connections"]),
        )
    };
    let mut table = Table::new(
        format!(
            "scale: backplane bytes received per message, members on node 0, posts through the last node; non-member verdict: {}{}. Cross-node group throughput ({} nodes, {} callers through node 0): one Redis {} posts/s ({} deliveries/s, POST p99 {} ms, Redis CPU {} µs/post); {}. {}",
            v["interest"]["verdict"].as_str().unwrap_or("?"),
            v["interest"]["why"]
                .as_str()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default(),
            num(&one["nodes"]),
            num(&one["callers"]),
            num(&one["posts_per_s"]),
            num(&one["deliveries_per_s"]),
            num(&one["post_latency"]["p99_ms"]),
            num(&one["redis_cpu_us_per_post"]),
            rc_text,
            memory,
        ),
        &[
            "message",
            "node 0 (members) in B/msg",
            "each other node in B/msg (max)",
            "all other nodes in B/msg",
            "posting node out B/msg",
            "Redis out B/msg",
            "delivered / expected",
        ],
    );
    for r in v["by_nodes"].as_array().into_iter().flatten() {
        table.row(
            &format!(
                "group, {} node(s), payload {} B",
                num(&r["nodes"]),
                num(&r["payload_bytes"])
            ),
            vec![
                num(&r["member_bytes_per_msg"]),
                num(&r["nonmember_max_bytes_per_msg"]),
                num(&r["nonmember_total_bytes_per_msg"]),
                num(&r["poster_out_bytes_per_msg"]),
                num(&r["redis_out_bytes_per_msg"]),
                format!("{} / {}", num(&r["delivered"]), num(&r["expected"])),
            ],
        );
    }
    let k = &v["kinds"];
    if !k.is_null() {
        let largest = v["by_nodes"]
            .as_array()
            .and_then(|rows| rows.iter().filter_map(|r| r["nodes"].as_u64()).max())
            .unwrap_or(0);
        let p = &k["cross_node_post"];
        table.row(
            &format!("cross-node POST /@connections, {largest} nodes (others: the reply)"),
            vec![
                num(&p["request_in_bytes_per_msg"]),
                num(&p["reply_in_bytes_per_msg"]),
                num(&p["reply_in_bytes_per_msg"]),
                num(&p["request_out_bytes_per_msg"]),
                num(&p["redis_out_bytes_per_msg"]),
                format!("{} / {}", num(&p["delivered"]), num(&k["messages"])),
            ],
        );
        let b = &k["broadcast_all"];
        let by_node: Vec<f64> = b["in_bytes_per_msg_by_node"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        table.row(
            &format!("POST /@broadcast, {largest} nodes"),
            vec![
                num(&json!(by_node.first())),
                num(&json!(by_node.iter().skip(1).copied().fold(0.0, f64::max))),
                num(&json!(round2(
                    by_node.iter().skip(1).fold(0.0, |a, b| a + b)
                ))),
                num(&b["out_bytes_per_msg"]),
                num(&b["redis_out_bytes_per_msg"]),
                format!("{} / {}", num(&b["delivered"]), num(&b["expected"])),
            ],
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_members_must_receive_nothing_at_any_node_count() {
        assert_eq!(
            interest_verdict(&[(1, 0.0), (2, 0.0), (4, 0.0), (8, 0.0)]),
            Outcome::Pass
        );
        // One node has no non-member: ignored.
        assert_eq!(interest_verdict(&[(1, 500.0), (2, 0.0)]), Outcome::Pass);
        let Outcome::Fail(why) = interest_verdict(&[(2, 0.0), (4, 120.0), (8, 0.0)]) else {
            panic!("120 B at 4 nodes must fail");
        };
        assert!(why.contains("4 nodes"), "{why}");
        // Every node receiving every message: grows with N.
        let Outcome::Fail(why) = interest_verdict(&[(8, 700.0), (2, 100.0), (4, 300.0)]) else {
            panic!("growth must fail");
        };
        assert!(why.contains("grows with N"), "{why}");
        assert!(matches!(
            interest_verdict(&[(1, 0.0)]),
            Outcome::NotMeasured(_)
        ));
        assert!(matches!(interest_verdict(&[]), Outcome::NotMeasured(_)));
        // A missing figure is never a pass.
        assert!(matches!(
            interest_verdict(&[(2, f64::NAN)]),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn counters_are_read_by_name_and_labels() {
        let text = "# TYPE switchboard_backplane_bytes_total counter\n\
            switchboard_backplane_bytes_total{api_id=\"sb\",direction=\"in\",kind=\"group\"} 1234\n\
            switchboard_backplane_bytes_total{kind=\"broadcast\",direction=\"in\"} 77\n\
            switchboard_backplane_bytes_total_extra{direction=\"in\",kind=\"group\"} 9\n\
            switchboard_backplane_connected{api_id=\"sb\"} 1\n";
        let group = [("direction", "in"), ("kind", "group")];
        assert_eq!(
            counter(text, "switchboard_backplane_bytes_total", &group),
            1234.0
        );
        assert_eq!(
            counter(
                text,
                "switchboard_backplane_bytes_total",
                &[("direction", "in"), ("kind", "broadcast")]
            ),
            77.0
        );
        assert_eq!(
            counter(
                text,
                "switchboard_backplane_bytes_total",
                &[("direction", "out"), ("kind", "group")]
            ),
            0.0
        );
        assert_eq!(counter(text, "switchboard_backplane_connected", &[]), 1.0);
        let before = Counters::parse("");
        let after = Counters::parse(text);
        assert_eq!(after.since(&before, "in", "group"), (0.0, 1234.0));
    }

    #[test]
    fn payloads_have_the_asked_length_and_parse_as_stamps() {
        for bytes in [60, 100, 1000] {
            let p = payload(bytes);
            assert_eq!(p.len(), bytes, "{p}");
            assert_eq!(stats::parse_stamp(&p).map(|s| s.1), Some(KIND_POST));
        }
    }

    #[test]
    fn commandstats_are_parsed() {
        let text = "# Commandstats\r\ncmdstat_spublish:calls=10,usec=42,usec_per_call=4.20,rejected_calls=0,failed_calls=0\r\ncmdstat_evalsha:calls=3,usec=9,usec_per_call=3.00\r\n";
        let c = commandstats(text);
        assert_eq!(c["spublish"], (10.0, 42.0));
        assert_eq!(c["evalsha"], (3.0, 9.0));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn cluster_configs_list_their_seeds() {
        let section = Backend::Cluster(vec![
            "redis://127.0.0.1:1".into(),
            "redis://127.0.0.1:2".into(),
        ])
        .section("p");
        assert!(
            section.contains(
                "redis_cluster_nodes = [\"redis://127.0.0.1:1\", \"redis://127.0.0.1:2\"]"
            )
        );
        assert!(!section.contains("redis_url"));
        assert!(
            Backend::Single("redis://127.0.0.1:3".into())
                .section("p")
                .contains("redis_url = \"redis://127.0.0.1:3\"")
        );
    }
}
