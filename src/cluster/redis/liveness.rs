//! Which nodes are alive: this node's lease, deciding whether a node that does not listen
//! is gone, and reaping the nodes whose lease lapsed — also when Redis lost everything in
//! between.
//!
//! Owns the lease TTL, whether the last refresh succeeded, the queue of dead nodes'
//! connections for `$disconnect`, and this node's **memory of the others**. The decisions
//! are pure functions ([`verdict_on_missing_owner`], [`may_reap`]) so they can be tested
//! without Redis.
//!
//! **Memory.** Every reaper pass (each half lease) reads which nodes exist (`nodes`, and
//! the ones remembered), their leases and their records' version. Each live node is
//! remembered by its [`WATCHERS`] successors on a ring of the live nodes' tags (sorted;
//! [`watched`]), so what a node keeps does not grow with the cluster: with N nodes it
//! remembers the connections of min(N − 1, [`WATCHERS`]) others. A watched node's
//! connection records are re-read (`HSCAN`) when their version changed, at most once per
//! [`reread_period`]; a node no longer watched (the ring changed) is forgotten, a dead one
//! kept until it is reaped. A remembered connection costs its record's
//! JSON (about 200–400 bytes, more with a large authorizer context) plus 16 bytes; the
//! gauges `switchboard_backplane_remembered_*` show the totals.
//!
//! **Reaping.** A node whose lease is missing, while Redis has been up for more than two
//! lease TTLs (so every live node has had time to re-register after a restart), and that
//! this survivor has seen without a lease for a whole TTL, is dead. The second rule is for
//! a Redis Cluster: a shard that fails over more slowly than a lease lives loses the
//! leases on it (nobody could refresh them), and its nodes — alive — re-register within a
//! third of a TTL of reaching it again; the promoted replica's uptime says nothing of that.
//! Every survivor that notices tries to claim it (`SET NX` on its reaper key, for
//! [`Liveness::claim_ms`]); exactly one succeeds — Redis decides, also a Redis restarted
//! empty, since all survivors talk to the same one. The claimant removes the node's records
//! and fires `$disconnect` (1006) for each of its connections: from Redis's records when
//! Redis still lists the node in `nodes`, else from its memory (Redis lost the node). Every
//! survivor then forgets the node, the claimant after reaping and the others when their
//! claim fails, so nobody fires twice. A node that shuts down gracefully takes its own
//! claim on the way out, so survivors forget it without firing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RedisBackplane;
use crate::cluster::{ConnectionRecord, DeliveryError, NodeDeath};
use crate::connections::now_ms;
use crate::telemetry::metrics;

/// How long a survivor's claim on cleaning up a dead node lasts at least (ms).
const REAPER_CLAIM_MS: u64 = 30_000;

/// How many nodes remember each node's connection records (its successors on the ring of
/// live nodes): that many may die together with it, Redis losing everything meanwhile, and
/// its connections still get their `$disconnect`.
pub(super) const WATCHERS: usize = 3;

/// The live nodes `me` remembers: those `me` is one of the [`WATCHERS`] successors of, on
/// the ring of `alive` tags (sorted; `me` among them or not). Every live node is watched by
/// min(N − 1, [`WATCHERS`]) others, whoever asks.
pub(super) fn watched<'a>(me: &str, alive: &[&'a str]) -> HashSet<&'a str> {
    let mut ring: Vec<&str> = alive.iter().copied().filter(|t| *t != me).collect();
    ring.push(me);
    ring.sort_unstable();
    ring.dedup();
    let n = ring.len();
    let Some(at) = ring.iter().position(|t| *t == me) else {
        return HashSet::new();
    };
    (1..=WATCHERS.min(n - 1))
        .map(|back| ring[(at + n - back) % n])
        .filter_map(|t| alive.iter().copied().find(|a| *a == t))
        .collect()
}

/// Records read per `HSCAN` round trip when re-reading another node's records.
const SCAN_COUNT: usize = 512;

/// The lease and what happens to dead nodes.
pub(super) struct Liveness {
    /// How long a lease lives without a refresh; refreshed every third of it.
    pub(super) ttl: Duration,
    /// The last lease refresh succeeded (half of [`RedisBackplane::is_connected`]).
    pub(super) lease_ok: AtomicBool,
    /// Each connection of a reaped node, for `$disconnect`.
    deaths: mpsc::Sender<NodeDeath>,
    /// Other nodes seen alive, by tag, with their connection records.
    memory: Mutex<HashMap<String, Remembered>>,
    /// The last version this node gave its own records (never repeats while it runs, so a
    /// survivor never mistakes records rewritten after a Redis restart for ones it read).
    version: AtomicU64,
    /// When this process started (ms), the first half of every version.
    started_ms: i64,
    /// Since when each node has been seen without a lease (cleared when seen with one).
    missing_since: Mutex<HashMap<String, Instant>>,
}

/// What a survivor knows of another node.
#[derive(Debug, Default)]
struct Remembered {
    /// The version of the records last read (`None`: never read).
    version: Option<String>,
    /// When they were read.
    read_at: Option<Instant>,
    /// Its connection records, as the JSON Redis holds.
    records: Vec<Box<str>>,
}

impl Liveness {
    /// Not yet registered; nobody remembered.
    pub(super) fn new(ttl: Duration, deaths: mpsc::Sender<NodeDeath>) -> Self {
        Self {
            ttl,
            lease_ok: AtomicBool::new(false),
            deaths,
            memory: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
            started_ms: now_ms(),
            missing_since: Mutex::new(HashMap::new()),
        }
    }

    /// How long a reaper claim lasts (ms): long enough for every survivor to try, and fail,
    /// within it, even after a Redis restart (two lease TTLs of waiting, then a pass).
    pub(super) fn claim_ms(&self) -> u64 {
        REAPER_CLAIM_MS.max(4 * self.ttl.as_millis() as u64)
    }

    /// A new version for this node's records: `<start ms>.<counter>`, unique per process.
    pub(super) fn next_version(&self) -> String {
        let n = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}.{n}", self.started_ms)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `tag` is remembered.
    fn is_remembered(&self, tag: &str) -> bool {
        self.memory().contains_key(tag)
    }

    /// The nodes remembered.
    fn remembered(&self) -> Vec<String> {
        self.memory().keys().cloned().collect()
    }

    /// Notes whether `tag` has a lease now; returns whether it has been without one for a
    /// whole TTL of this node's observations.
    fn missing_for_a_ttl(&self, tag: &str, has_lease: bool) -> bool {
        let mut missing = self.missing_since.lock().unwrap_or_else(|p| p.into_inner());
        if has_lease {
            missing.remove(tag);
            return false;
        }
        missing
            .entry(tag.to_owned())
            .or_insert_with(Instant::now)
            .elapsed()
            >= self.ttl
    }

    /// Forgets a node (reaped, or someone else's to reap); returns its records.
    fn forget(&self, tag: &str) -> Vec<Box<str>> {
        self.missing_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tag);
        let records = self.memory().remove(tag).map(|r| r.records);
        self.report_memory();
        records.unwrap_or_default()
    }

    /// Sets the `remembered` gauges.
    fn report_memory(&self) {
        let memory = self.memory();
        let connections = memory.values().map(|r| r.records.len()).sum();
        let bytes = memory
            .values()
            .flat_map(|r| &r.records)
            .map(|json| json.len() + std::mem::size_of::<Box<str>>())
            .sum();
        metrics::backplane_remembered(memory.len(), connections, bytes);
    }
}

/// How often, at most, a survivor re-reads the records of a node whose records changed.
pub(super) fn reread_period(ttl: Duration) -> Duration {
    ttl * 2
}

/// Nobody listens on an owner's inbox: is it gone? Only when Redis says its lease does not
/// exist (`lease_exists == Some(false)`), it is not (or no longer) registered in `nodes`
/// (`registered == Some(false)`: a reaper removed it, or Redis lost everything), and Redis
/// has been up for more than two lease TTLs, so a restarted Redis has given every live node
/// a refresh to re-register in. Anything unknown (Redis errors, no uptime) answers
/// "unavailable": a live connection is never declared gone by mistake — also not one whose
/// lease lapsed while its Redis Cluster shard failed over.
pub(super) fn verdict_on_missing_owner(
    lease_exists: Option<bool>,
    registered: Option<bool>,
    redis_uptime: Option<Duration>,
    lease_ttl: Duration,
) -> DeliveryError {
    if registered == Some(false) && may_reap(lease_exists, redis_uptime, lease_ttl) {
        DeliveryError::Gone
    } else {
        DeliveryError::Unavailable
    }
}

/// Whether a node is dead: its lease is known to be missing and Redis has been up for more
/// than two lease TTLs (a node alive through a Redis restart has re-registered by then).
pub(super) fn may_reap(
    lease_exists: Option<bool>,
    redis_uptime: Option<Duration>,
    lease_ttl: Duration,
) -> bool {
    matches!((lease_exists, redis_uptime), (Some(false), Some(up)) if up > lease_ttl * 2)
}

/// Redis's uptime from the text of `INFO server` (its `uptime_in_seconds:` line).
pub(super) fn uptime_from_info(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl RedisBackplane {
    /// Redis's uptime: on a cluster, that of its most recently started node (`None` if one
    /// cannot be read).
    async fn redis_uptime(&self) -> Option<Duration> {
        self.conn().min_uptime().await
    }

    /// Removes the nodes listed in the subscriber set `set` that are dead (lease gone and
    /// reaped, or lost with everything by a Redis up long enough that a live node would have
    /// re-registered); returns how many.
    pub(super) async fn forget_dead_subscribers(&self, set: &str) -> usize {
        let mut conn = self.conn();
        let Ok(listed) = conn.smembers::<_, Vec<String>>(set).await else {
            return 0;
        };
        let others: Vec<&String> = listed.iter().filter(|t| **t != self.tag).collect();
        if others.is_empty() {
            return 0;
        }
        let mut pipe = redis::pipe();
        for tag in &others {
            pipe.exists(self.keys.lease(tag));
            pipe.zscore(self.keys.nodes(), tag);
        }
        let Ok(answers) = pipe
            .query_async::<Vec<(bool, Option<f64>)>>(&mut conn)
            .await
        else {
            return 0;
        };
        let (leases, registered): (Vec<bool>, Vec<Option<f64>>) = answers.into_iter().unzip();
        // Dead as the reaper decided it: no lease, and no longer registered.
        let dead: Vec<&&String> = others
            .iter()
            .zip(leases.into_iter().zip(registered))
            .filter(|(_, (alive, registered))| !alive && registered.is_none())
            .map(|(t, _)| t)
            .collect();
        if dead.is_empty() || !may_reap(Some(false), self.redis_uptime().await, self.liveness.ttl) {
            return 0;
        }
        let removed: Result<usize, _> = conn.srem(set, dead.as_slice()).await;
        removed.unwrap_or(0)
    }

    /// Nobody listens on `target`'s inbox: gone, unless its lease lives or Redis has just
    /// restarted (nodes re-register within a lease refresh).
    pub(super) async fn owner_missing(&self, target: &str) -> DeliveryError {
        let mut conn = self.conn();
        let lease_exists = conn.exists::<_, bool>(self.keys.lease(target)).await.ok();
        if lease_exists != Some(false) {
            return DeliveryError::Unavailable;
        }
        let registered = conn
            .zscore::<_, _, Option<f64>>(self.keys.nodes(), target)
            .await
            .ok()
            .map(|score| score.is_some());
        let uptime = self.redis_uptime().await;
        verdict_on_missing_owner(lease_exists, registered, uptime, self.liveness.ttl)
    }
    /// Refreshes the lease every third of its TTL; re-registers everything when the lease
    /// was missing (Redis restarted or lost it) or a record write was lost.
    pub(super) async fn lease_keeper(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.liveness.ttl / 3;
        let lease_ok = &self.liveness.lease_ok;
        loop {
            let ok = match self.refresh_lease().await {
                Ok(()) => true,
                Err(error) => {
                    if lease_ok.load(Ordering::Relaxed) {
                        warn!(%error, "backplane unreachable: cross-node operations answer 503");
                    }
                    false
                }
            };
            if ok && !lease_ok.load(Ordering::Relaxed) {
                info!(node = %self.tag, "backplane connected");
            }
            lease_ok.store(ok, Ordering::Relaxed);
            metrics::backplane_connected(self.is_connected());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    async fn refresh_lease(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let ttl = self.liveness.ttl.as_millis() as u64;
        let refreshed: Option<String> = redis::cmd("SET")
            .arg(self.keys.lease(&self.tag))
            .arg(now_ms())
            .arg("XX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await?;
        if (refreshed.is_none() || self.records.take_dirty())
            && let Err(error) = self.resync().await
        {
            self.records.mark_dirty();
            return Err(error);
        }

        conn.zadd::<_, _, _, ()>(self.keys.nodes(), &self.tag, now_ms())
            .await
    }

    /// Looks for dead nodes every half lease and cleans up the ones it claims.
    pub(super) async fn reaper(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.liveness.ttl / 2;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            if let Err(error) = self.reap_dead_nodes().await {
                debug!(%error, "reaper pass failed");
            }
            self.liveness.report_memory();
        }
    }

    /// One pass: every node Redis lists or this node remembers, alive (remembered, its
    /// records re-read if they changed) or dead (claimed and reaped, or forgotten).
    async fn reap_dead_nodes(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let registered: HashSet<String> = conn
            .zrange::<_, Vec<String>>(self.keys.nodes(), 0, -1)
            .await?
            .into_iter()
            .collect();
        let mut tags: BTreeSet<String> = registered.iter().cloned().collect();
        tags.extend(self.liveness.remembered());
        tags.remove(&self.tag);
        if tags.is_empty() {
            return Ok(());
        }
        let tags: Vec<String> = tags.into_iter().collect();
        let mut pipe = redis::pipe();
        for tag in &tags {
            pipe.exists(self.keys.lease(tag));
        }
        let leases: Vec<bool> = pipe.query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for tag in &tags {
            pipe.get(self.keys.version(tag));
        }
        let versions: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        let alive: Vec<&str> = tags
            .iter()
            .zip(&leases)
            .filter(|(_, alive)| **alive)
            .map(|(t, _)| t.as_str())
            .collect();
        let watched = watched(&self.tag, &alive);
        let mut uptime = None;
        for ((tag, alive), version) in tags.iter().zip(leases).zip(versions) {
            let missing_long_enough = self.liveness.missing_for_a_ttl(tag, alive);
            if alive {
                if watched.contains(tag.as_str()) {
                    self.remember(tag, version).await?;
                } else if self.liveness.is_remembered(tag) {
                    self.liveness.forget(tag);
                }
                continue;
            }
            if !missing_long_enough {
                continue;
            }
            if uptime.is_none() {
                uptime = Some(self.redis_uptime().await);
            }
            if !may_reap(Some(false), uptime.flatten(), self.liveness.ttl) {
                continue;
            }
            let claimed: Option<String> = redis::cmd("SET")
                .arg(self.keys.reaper(tag))
                .arg(&self.tag)
                .arg("NX")
                .arg("PX")
                .arg(self.liveness.claim_ms())
                .query_async(&mut conn)
                .await?;
            if claimed.is_none() {
                // Another survivor reaps it (or it left gracefully): not ours to fire for.
                self.liveness.forget(tag);
                continue;
            }
            let remembered = self.liveness.forget(tag);
            if registered.contains(tag) {
                self.reap(tag).await?;
            } else {
                self.reap_remembered(tag, remembered).await?;
            }
        }
        Ok(())
    }

    /// `tag`'s lease is there: remember the node, and re-read its records if their
    /// `version` is not the one read (at most once per [`reread_period`]).
    async fn remember(&self, tag: &str, version: Option<String>) -> Result<(), redis::RedisError> {
        let due = {
            let mut memory = self.liveness.memory();
            let known = memory.entry(tag.to_owned()).or_default();
            known.version != version
                && known
                    .read_at
                    .is_none_or(|at| at.elapsed() >= reread_period(self.liveness.ttl))
        };
        if !due {
            return Ok(());
        }
        // The version is read before the records: a change during the scan is read again.
        let records = self.scan_records(tag).await?;
        let mut memory = self.liveness.memory();
        let known = memory.entry(tag.to_owned()).or_default();
        known.version = version;
        known.read_at = Some(Instant::now());
        known.records = records;
        Ok(())
    }

    /// Every connection record of `tag`, by `HSCAN` (a large node does not block Redis).
    async fn scan_records(&self, tag: &str) -> Result<Vec<Box<str>>, redis::RedisError> {
        let mut conn = self.conn();
        let key = self.keys.conns(tag);
        let mut records: HashMap<String, Box<str>> = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            let mut pairs = flat.into_iter();
            while let (Some(id), Some(json)) = (pairs.next(), pairs.next()) {
                records.insert(id, json.into_boxed_str());
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(records.into_values().collect())
    }

    /// Removes a dead node Redis still lists, from Redis's records.
    async fn reap(&self, tag: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let records: Vec<(String, String)> = conn.hgetall(self.keys.conns(tag)).await?;
        let memberships: Vec<String> = conn.smembers(self.keys.memberships(tag)).await?;
        let count = records.len();
        // First each connection is handed over (a resumable session is adopted here), while
        // the dead node is still listed: broadcasts to its groups are refused meanwhile.
        let records = records.into_iter().map(|(_, json)| json.into_boxed_str());
        let living = self.fire_deaths(tag, records).await;
        let mut pipe = redis::pipe();
        for entry in &memberships {
            if let Some((group, id)) = entry.split_once('\t')
                && !living.contains(id)
            {
                pipe.zrem(self.keys.members(group), id).ignore();
            }
        }
        self.remove_node(&mut pipe, tag);
        pipe.query_async::<()>(&mut conn).await?;
        warn!(dead_node = %tag, connections = count, adopted = living.len(), "node lease lapsed: removed its connections");
        Ok(())
    }

    /// Removes a dead node Redis no longer knows (it lost everything since this node read
    /// the dead one's records), from this node's memory of it.
    async fn reap_remembered(
        &self,
        tag: &str,
        records: Vec<Box<str>>,
    ) -> Result<(), redis::RedisError> {
        // Whatever Redis may still hold of it goes too (its group memberships are gone
        // with the restart).
        let mut pipe = redis::pipe();
        self.remove_node(&mut pipe, tag);
        pipe.query_async::<()>(&mut self.conn()).await?;
        warn!(dead_node = %tag, connections = records.len(), "node vanished while Redis lost its records: reaped it from memory");
        self.fire_deaths(tag, records.into_iter()).await;
        Ok(())
    }

    /// Adds the commands that remove `tag`'s own keys and its `nodes` entry to `pipe`.
    fn remove_node(&self, pipe: &mut redis::Pipeline, tag: &str) {
        pipe.del(self.keys.conns(tag))
            .ignore()
            .del(self.keys.ids(tag))
            .ignore()
            .del(self.keys.memberships(tag))
            .ignore()
            .del(self.keys.version(tag))
            .ignore()
            .zrem(self.keys.nodes(), tag)
            .ignore();
    }

    /// Hands each record to this node's hook (`$disconnect`, or a resumable session's
    /// adoption) and waits for every answer; returns the ids that live on.
    async fn fire_deaths(
        &self,
        tag: &str,
        records: impl Iterator<Item = Box<str>>,
    ) -> std::collections::HashSet<String> {
        let mut answers = Vec::new();
        for json in records {
            if let Ok(record) = serde_json::from_str::<ConnectionRecord>(&json) {
                let id = record.connection_id.clone();
                let (lives_on, answer) = tokio::sync::oneshot::channel();
                let node = tag.to_owned();
                let death = NodeDeath {
                    node,
                    record,
                    lives_on,
                };
                if self.liveness.deaths.send(death).await.is_ok() {
                    answers.push((id, answer));
                }
            }
        }
        let mut living = std::collections::HashSet::new();
        for (id, answer) in answers {
            if answer.await == Ok(true) {
                living.insert(id);
            }
        }
        living
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_owner_is_gone_only_when_its_lease_is_and_redis_is_not_new() {
        let ttl = Duration::from_millis(1500);
        let secs = |s| Some(Duration::from_secs(s));
        use DeliveryError::{Gone, Unavailable};
        let table = [
            // (lease exists?, Redis uptime, verdict) — of a node no longer registered
            (Some(false), secs(3600), Gone),
            (Some(false), secs(4), Gone),          // 4 s > 3 s
            (Some(false), secs(3), Unavailable),   // not more than 2 TTLs
            (Some(false), secs(0), Unavailable),   // Redis just restarted
            (Some(false), None, Unavailable),      // INFO failed
            (Some(true), secs(3600), Unavailable), // lease lives: slow, not dead
            (Some(true), None, Unavailable),
            (None, secs(3600), Unavailable), // EXISTS failed
            (None, None, Unavailable),
        ];
        for (lease, uptime, expected) in table {
            assert_eq!(
                verdict_on_missing_owner(lease, Some(false), uptime, ttl),
                expected,
                "lease {lease:?}, uptime {uptime:?}"
            );
            // Still registered (not reaped yet), or unknown: never gone.
            for registered in [Some(true), None] {
                assert_eq!(
                    verdict_on_missing_owner(lease, registered, uptime, ttl),
                    Unavailable,
                    "registered {registered:?}, lease {lease:?}, uptime {uptime:?}"
                );
            }
        }
        // The bound scales with the TTL.
        let long = Duration::from_secs(60);
        assert_eq!(
            verdict_on_missing_owner(Some(false), Some(false), secs(100), long),
            Unavailable
        );
        assert_eq!(
            verdict_on_missing_owner(Some(false), Some(false), secs(121), long),
            Gone
        );
    }

    #[test]
    fn every_live_node_is_watched_by_its_successors_only() {
        let tags: Vec<String> = (0..10).map(|i| format!("n{i:02}")).collect();
        let alive: Vec<&str> = tags.iter().map(String::as_str).collect();
        // Each node is watched by exactly WATCHERS others, its successors on the ring.
        for watched_tag in &alive {
            let watchers: Vec<&str> = alive
                .iter()
                .copied()
                .filter(|me| watched(me, &alive).contains(watched_tag))
                .collect();
            assert_eq!(watchers.len(), WATCHERS, "{watched_tag}: {watchers:?}");
            assert!(!watchers.contains(watched_tag));
        }
        assert_eq!(watched("n00", &alive), HashSet::from(["n09", "n08", "n07"]));
        // Few nodes: everyone watches everyone else.
        assert_eq!(watched("b", &["a", "b", "c"]), HashSet::from(["a", "c"]));
        assert_eq!(watched("a", &["a"]), HashSet::new());
        // Asking while not (yet) live itself: it still takes its place on the ring.
        assert_eq!(
            watched("c", &["a", "b", "d", "e", "f"]),
            HashSet::from(["b", "a", "f"])
        );
    }

    #[test]
    fn a_node_counts_as_missing_only_after_a_whole_ttl_without_a_lease() {
        let (deaths, _rx) = mpsc::channel(1);
        let liveness = Liveness::new(Duration::from_millis(40), deaths);
        assert!(!liveness.missing_for_a_ttl("a", false), "first sight");
        std::thread::sleep(Duration::from_millis(50));
        assert!(liveness.missing_for_a_ttl("a", false), "a TTL later");
        // Seen with a lease (it re-registered): the clock starts again.
        assert!(!liveness.missing_for_a_ttl("a", true));
        assert!(!liveness.missing_for_a_ttl("a", false));
    }

    #[test]
    fn versions_never_repeat_and_claims_outlast_the_wait_after_a_restart() {
        let (deaths, _rx) = mpsc::channel(1);
        let liveness = Liveness::new(Duration::from_millis(1500), deaths);
        let versions: HashSet<String> = (0..1000).map(|_| liveness.next_version()).collect();
        assert_eq!(versions.len(), 1000);
        assert_eq!(liveness.claim_ms(), REAPER_CLAIM_MS);
        let (deaths, _rx) = mpsc::channel(1);
        let long = Liveness::new(Duration::from_secs(60), deaths);
        // Longer than the two TTLs a survivor waits after a Redis restart, plus a pass.
        assert_eq!(long.claim_ms(), 240_000);
        assert!(long.claim_ms() > 2 * 60_000 + 30_000);
    }

    #[test]
    fn uptime_is_read_from_info_text() {
        let info = "# Server\r\nredis_version:7.2.4\r\nprocess_id:1\r\nuptime_in_seconds:1234\r\nuptime_in_days:0\r\n";
        assert_eq!(uptime_from_info(info), Some(Duration::from_secs(1234)));
        let table = [
            ("uptime_in_seconds:7", Some(7)),
            ("uptime_in_seconds: 7 ", Some(7)),
            ("# Server\nuptime_in_seconds:0\n", Some(0)),
            ("", None),
            ("# Server\r\nuptime_in_days:3\r\n", None),
            ("uptime_in_seconds:", None),
            ("uptime_in_seconds:-1", None),
            ("uptime_in_seconds:abc", None),
            (" uptime_in_seconds:5", None), // not at the start of a line
        ];
        for (text, secs) in table {
            assert_eq!(
                uptime_from_info(text),
                secs.map(Duration::from_secs),
                "{text:?}"
            );
        }
    }
}
