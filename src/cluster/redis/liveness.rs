//! Which nodes are alive: this node's lease, deciding whether a node that does not listen
//! is gone, and reaping the nodes whose lease lapsed.
//!
//! Owns the lease TTL, whether the last refresh succeeded, and the queue of dead nodes'
//! connections for `$disconnect`. The decision about a silent owner is a pure function
//! ([`verdict_on_missing_owner`]) so it can be tested without Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RedisBackplane;
use crate::cluster::{ConnectionRecord, DeliveryError};
use crate::connections::now_ms;
use crate::telemetry::metrics;

/// How long a survivor's claim on cleaning up a dead node lasts (ms).
const REAPER_CLAIM_MS: u64 = 30_000;

/// The lease and what happens to dead nodes.
pub(super) struct Liveness {
    /// How long a lease lives without a refresh; refreshed every third of it.
    pub(super) ttl: Duration,
    /// The last lease refresh succeeded (half of [`RedisBackplane::is_connected`]).
    pub(super) lease_ok: AtomicBool,
    /// Each connection of a reaped node, for `$disconnect`.
    deaths: mpsc::Sender<ConnectionRecord>,
}

impl Liveness {
    /// Not yet registered.
    pub(super) fn new(ttl: Duration, deaths: mpsc::Sender<ConnectionRecord>) -> Self {
        Self {
            ttl,
            lease_ok: AtomicBool::new(false),
            deaths,
        }
    }
}

/// Nobody listens on an owner's inbox: is it gone? Only when Redis says its lease does not
/// exist (`lease_exists == Some(false)`) and Redis has been up for more than two lease
/// TTLs, so a restarted Redis has given every live node a refresh to re-register in.
/// Anything unknown (Redis errors, no uptime) answers "unavailable": a live connection is
/// never declared gone by mistake.
pub(super) fn verdict_on_missing_owner(
    lease_exists: Option<bool>,
    redis_uptime: Option<Duration>,
    lease_ttl: Duration,
) -> DeliveryError {
    match (lease_exists, redis_uptime) {
        (Some(false), Some(up)) if up > lease_ttl * 2 => DeliveryError::Gone,
        _ => DeliveryError::Unavailable,
    }
}

/// Redis's uptime from the text of `INFO server` (its `uptime_in_seconds:` line).
pub(super) fn uptime_from_info(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl RedisBackplane {
    /// Nobody listens on `target`'s inbox: gone, unless its lease lives or Redis has just
    /// restarted (nodes re-register within a lease refresh).
    pub(super) async fn owner_missing(&self, target: &str) -> DeliveryError {
        let mut conn = self.conn();
        let lease_exists = conn.exists::<_, bool>(self.keys.lease(target)).await.ok();
        let uptime = if lease_exists == Some(false) {
            let info: Result<String, _> = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await;
            info.ok().as_deref().and_then(uptime_from_info)
        } else {
            None
        };
        verdict_on_missing_owner(lease_exists, uptime, self.liveness.ttl)
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
        }
    }

    async fn reap_dead_nodes(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let tags: Vec<String> = conn.zrange(self.keys.nodes(), 0, -1).await?;
        for tag in tags.iter().filter(|t| **t != self.tag) {
            if conn.exists::<_, bool>(self.keys.lease(tag)).await? {
                continue;
            }
            let claimed: Option<String> = redis::cmd("SET")
                .arg(self.keys.reaper(tag))
                .arg(&self.tag)
                .arg("NX")
                .arg("PX")
                .arg(REAPER_CLAIM_MS)
                .query_async(&mut conn)
                .await?;
            if claimed.is_some() {
                self.reap(tag).await?;
            }
        }
        Ok(())
    }

    async fn reap(&self, tag: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
        let records: Vec<(String, String)> = conn.hgetall(self.keys.conns(tag)).await?;
        let memberships: Vec<String> = conn.smembers(self.keys.memberships(tag)).await?;
        let mut pipe = redis::pipe();
        for entry in &memberships {
            if let Some((group, id)) = entry.split_once('\t') {
                pipe.zrem(self.keys.members(group), id).ignore();
            }
        }
        pipe.del(self.keys.conns(tag))
            .ignore()
            .del(self.keys.ids(tag))
            .ignore()
            .del(self.keys.memberships(tag))
            .ignore()
            .zrem(self.keys.nodes(), tag)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        warn!(dead_node = %tag, connections = records.len(), "node lease lapsed: removed its connections");
        for (_, json) in records {
            if let Ok(record) = serde_json::from_str::<ConnectionRecord>(&json) {
                let _ = self.liveness.deaths.send(record).await;
            }
        }
        Ok(())
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
            // (lease exists?, Redis uptime, verdict)
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
                verdict_on_missing_owner(lease, uptime, ttl),
                expected,
                "lease {lease:?}, uptime {uptime:?}"
            );
        }
        // The bound scales with the TTL.
        let long = Duration::from_secs(60);
        assert_eq!(
            verdict_on_missing_owner(Some(false), secs(100), long),
            Unavailable
        );
        assert_eq!(verdict_on_missing_owner(Some(false), secs(121), long), Gone);
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
