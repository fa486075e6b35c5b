//! A real Redis Cluster on loopback: [`RedisCluster`], three masters and three replicas
//! (`redis-server --cluster-enabled yes` on free ports, each in its own temporary
//! directory, joined by `redis-cli --cluster create`), with what the fault tests do to it:
//! kill a master, move a slot, and ask who owns what.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::start_nodes;
use super::{Gateway, WHOAMI, base_config, free_port};

/// One `redis-server` of the cluster.
struct ClusterNode {
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// Three masters, three replicas; stopped when dropped.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    /// `requirepass` (and `masterauth`) of every node, if any.
    password: Option<String>,
}

/// `cluster-node-timeout`: how long a master may be silent before its replica takes over.
pub const NODE_TIMEOUT_MS: u64 = 2000;

impl RedisCluster {
    /// Starts six servers, creates the cluster and waits until every node reports it ok.
    pub async fn start() -> RedisCluster {
        Self::start_with(None).await
    }

    /// The same, every node requiring `password`.
    pub async fn start_with_password(password: &str) -> RedisCluster {
        Self::start_with(Some(password)).await
    }

    async fn start_with(password: Option<&str>) -> RedisCluster {
        let auth: Vec<String> = password
            .map(|pw| {
                ["--requirepass", pw, "--masterauth", pw]
                    .map(str::to_owned)
                    .to_vec()
            })
            .unwrap_or_default();
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    // Replicas sync at once (the default waits 5 s for more replicas), so
                    // a master killed early has a replica ready to take over.
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .args(&auth)
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)");
            nodes.push(ClusterNode {
                port,
                child: Some(child),
                _dir: dir,
            });
        }
        let cluster = RedisCluster {
            nodes,
            password: password.map(str::to_owned),
        };
        for node in &cluster.nodes {
            cluster
                .wait(&format!("node {} answers", node.port), || {
                    cluster.cli(node.port, &["PING"]) == "PONG"
                })
                .await;
        }
        let mut create = Command::new("redis-cli");
        create.args(cluster.auth_args());
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok().await;
        cluster
            .wait("every replica in sync with its master", || {
                cluster.nodes.iter().all(|n| {
                    let info = cluster.cli(n.port, &["INFO", "replication"]);
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            })
            .await;
        cluster
    }

    /// Waits (up to 30 s) until every running node says `cluster_state:ok` and knows three
    /// masters with all slots.
    pub async fn wait_ok(&self) {
        self.wait("cluster state ok on every node", || {
            self.running_ports().iter().all(|&p| {
                let info = self.cli(p, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            }) && self.masters().len() == 3
        })
        .await;
    }

    async fn wait(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "Redis Cluster: {what} (timed out)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The seed URLs for `cluster.redis_cluster_nodes` (every node, with the password).
    pub fn seeds(&self) -> Vec<String> {
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!(":{pw}@"))
            .unwrap_or_default();
        self.nodes
            .iter()
            .map(|n| format!("redis://{auth}127.0.0.1:{}", n.port))
            .collect()
    }

    /// redis-cli's arguments for the password.
    fn auth_args(&self) -> Vec<String> {
        match &self.password {
            Some(pw) => vec!["-a".into(), pw.clone(), "--no-auth-warning".into()],
            None => Vec::new(),
        }
    }

    /// Runs a redis-cli command on the node at `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.auth_args())
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn cli_async(&self, port: u16, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(self.auth_args())
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The masters that are up (as a running node sees them): `(port, node id)`.
    pub fn masters(&self) -> Vec<(u16, String)> {
        let Some(&any) = self.running_ports().first() else {
            return Vec::new();
        };
        self.cli(any, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && !l.contains("noaddr"))
            .filter_map(|l| {
                let mut fields = l.split(' ');
                let id = fields.next()?.to_owned();
                let port = fields.next()?.split(['@', ':']).nth(1)?.parse().ok()?;
                Some((port, id))
            })
            .filter(|(port, _)| self.running_ports().contains(port))
            .collect()
    }

    /// The slot of a key or channel name.
    pub fn keyslot(&self, name: &str) -> u16 {
        let port = self.running_ports()[0];
        self.cli(port, &["CLUSTER", "KEYSLOT", name])
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {name}"))
    }

    /// The port of the master serving `slot` now.
    pub fn owner_of(&self, slot: u16) -> u16 {
        self.ranges()
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, port)| port)
            .unwrap_or_else(|| panic!("no owner for slot {slot}"))
    }

    /// The slot ranges and their masters' ports: `(first, last, port)`.
    pub fn ranges(&self) -> Vec<(u16, u16, u16)> {
        let port = self.running_ports()[0];
        let slots = self.cli(port, &["CLUSTER", "SLOTS"]);
        // redis-cli prints nested arrays one value per line: start, end, ip, port, id, …
        let lines: Vec<&str> = slots.lines().map(str::trim).collect();
        let mut ranges = Vec::new();
        for i in 0..lines.len().saturating_sub(3) {
            if let (Ok(start), Ok(end), Ok(p)) = (
                lines[i].parse::<u16>(),
                lines[i + 1].parse::<u16>(),
                lines[i + 3].parse::<u16>(),
            ) && lines[i + 2] == "127.0.0.1"
                && start <= end
            {
                ranges.push((start, end, p));
            }
        }
        ranges
    }

    /// How many clients of the node at `port` subscribe to the shard channel `channel`.
    pub fn shard_subscribers(&self, port: u16, channel: &str) -> u32 {
        let out = self.cli(port, &["PUBSUB", "SHARDNUMSUB", channel]);
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the master at `port` (as a crash would); its replica takes over after
    /// [`NODE_TIMEOUT_MS`].
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slot` (with its keys) to the master at `to`, the way `redis-cli --cluster
    /// reshard` does: IMPORTING/MIGRATING, MIGRATE each key, then SETSLOT NODE everywhere.
    /// Asynchronous, so traffic the test drives meanwhile keeps flowing.
    pub async fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let from_id = self.cli_async(from, &["CLUSTER", "MYID"]).await;
        let to_id = self.cli_async(to, &["CLUSTER", "MYID"]).await;
        let slot_s = slot.to_string();
        let importing = ["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id];
        assert_eq!(self.cli_async(to, &importing).await, "OK");
        let migrating = ["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id];
        assert_eq!(self.cli_async(from, &migrating).await, "OK");
        loop {
            let keys = self
                .cli_async(from, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"])
                .await;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_s = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_s, "", "0", "5000"];
            if let Some(pw) = &self.password {
                args.extend(["AUTH", pw.as_str()]);
            }
            args.push("KEYS");
            args.extend(keys);
            let out = self.cli_async(from, &args).await;
            assert!(out == "OK" || out == "NOKEY", "MIGRATE answered {out}");
        }
        // The new owner first, then the old one (it then drops the slot's shard
        // subscriptions with a `sunsubscribe`), then everyone else.
        let mut order = vec![to, from];
        order.extend(
            self.masters()
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| *p != to && *p != from),
        );
        for port in order {
            self.cli_async(port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id])
                .await;
        }
    }

    /// Runs `redis-cli --cluster reshard`, moving `count` slots (the lowest of its range)
    /// from the master at `from` to the one at `to`. Asynchronous, like
    /// [`migrate_slot`](Self::migrate_slot).
    pub async fn reshard(&self, from: u16, to: u16, count: u16) {
        let from_id = self.cli_async(from, &["CLUSTER", "MYID"]).await;
        let to_id = self.cli_async(to, &["CLUSTER", "MYID"]).await;
        let out = tokio::process::Command::new("redis-cli")
            .args(self.auth_args())
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The slot of a key or channel name, computed as Redis does (CRC16-XMODEM of the hash tag,
/// or of the whole name, modulo 16384), to search names without asking Redis each time.
pub fn slot_of(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let hashed = match name.find('{') {
        Some(open) => match name[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A config for a gateway node on `cluster` with a short lease, plus `extra` sections.
pub fn redis_cluster_config(cluster: &RedisCluster, extra: &str) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{}\n[cluster]\nredis_cluster_nodes = [{}]\nlease_ttl_ms = 1500\nrequest_timeout_ms = 1000\n{extra}",
        base_config(),
        seeds.join(", ")
    )
}

/// `n` gateway nodes on `cluster` (with the `whoami` route), each ready on the backplane.
pub async fn cluster_nodes(cluster: &RedisCluster, n: usize, extra: &str) -> Vec<Gateway> {
    start_nodes(
        &redis_cluster_config(cluster, &format!("{WHOAMI}{extra}")),
        n,
    )
    .await
}
