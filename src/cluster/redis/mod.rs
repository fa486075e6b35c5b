//! The Redis backplane: one type, [`RedisBackplane`], that owns the Redis client and the
//! connection every job shares, with its jobs one per file:
//!
//! - `requests`: requests to other nodes and their replies, broadcasts, and this node's
//!   subscriber, which dispatches what arrives (a request runs through [`ops::apply`]).
//! - `interest`: which group channels this node is subscribed to (those of the groups it
//!   holds members of), settled on every join and leave.
//! - `records`: the background record writer and the resync that rewrites everything.
//! - `liveness`: this node's lease, deciding whether a silent owner is gone, and reaping
//!   dead nodes.
//! - `listings`: connection and member listings, and their cursors.
//! - `sessions`: resumable sessions' histories (streams) and state, for a resume on
//!   another node after their node died.
//! - `moves`: moving a resumable session between two live nodes, when its client resumed
//!   through another one.
//!
//! How Redis is reached — one server or a Redis Cluster: the command connection `Conn`,
//! publishing and the subscriber link — lives in `transport` alone; the jobs above are
//! the same on both topologies.
//! Key and channel names are in [`keys`](super::keys), message shapes in
//! [`wire`](super::wire).
//!
//! Semantics:
//!
//! - **Subscriptions**: a node listens on its own inbox, the broadcast channel (broadcasts
//!   to every connection) and the channel of each group it holds a member of. A group
//!   broadcast is published once on the group's channel, so Redis writes it once per
//!   interested node and no other node decodes it. A join answers once its node's
//!   subscription is confirmed, so a broadcast sent after the answer reaches the member.
//! - **Requests** (POST, GET, DELETE, join, leave on a remote connection) are published to
//!   the owner's inbox channel; the owner runs them on its local state and publishes the
//!   typed result to the asker's inbox. No subscriber on the owner's inbox means the owner
//!   is gone — unless its lease is still there or Redis has just restarted, when the answer
//!   is "unavailable" so a live connection is never declared gone by mistake.
//! - **Records** (connect, disconnect, join, leave) are written by one background writer
//!   fed through a bounded queue, so no session ever waits on Redis. A write that cannot be
//!   queued or fails marks the node dirty, and the next lease refresh rewrites everything.
//! - **Listings** page through sorted sets ordered by id (`ZRANGEBYLEX`), so a page holds
//!   at most `limit` entries and its cursor is the last id listed: a connection or member
//!   that stays for the whole listing appears exactly once.
//! - **Leases** are refreshed every third of their TTL with `SET … XX`; finding the lease
//!   missing means Redis lost it, and the node re-registers all it holds.
//! - **Reaping**: each node looks for nodes whose lease is gone — those in `nodes`, and
//!   those it remembers having seen alive (with their connection records), so a node that
//!   died shortly before Redis lost everything is still reaped. The first to claim one
//!   (`SET NX` on its reaper key) removes its records and memberships and fires
//!   `$disconnect` (1006) for each of its connections.
//!
//! [`ops::apply`]: super::ops::apply

mod interest;
mod listings;
mod liveness;
mod moves;
mod records;
mod requests;
mod sessions;
mod transport;

pub use sessions::KeptSession;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::NodeDeaths;
use super::keys::{self, Keys};
use super::local::Local;
use crate::config::ClusterSettings;
use crate::telemetry::metrics::{self, BackplaneKind, Direction};

use transport::{Arrivals, Conn, Published, Redis, Sink};

/// Records of dead nodes' connections that may wait for the `$disconnect` hook.
const DEATH_QUEUE: usize = 1024;

/// The Redis backplane of one node.
pub struct RedisBackplane {
    /// This node's tag, as it appears in keys and channels.
    tag: String,
    /// Key and channel names under the configured prefix.
    keys: Keys,
    /// The deployment: opens the subscriber links (a subscribed connection cannot run
    /// commands).
    redis: Redis,
    /// Runs every command; cloned per use (cheap, multiplexed).
    conn: Conn,
    /// This node's connections and groups, which requests and resyncs read.
    local: Arc<Local>,
    /// Requests in flight and the subscriber's state.
    requests: requests::Requests,
    /// Which group channels this node is subscribed to.
    interest: interest::Interest,
    /// The record writer's queue and whether a write was lost.
    records: records::RecordWriter,
    /// The lease and what happens to dead nodes.
    liveness: liveness::Liveness,
    /// Resumable sessions' histories and state, written in the background.
    sessions: Arc<sessions::SessionWriter>,
    /// Resumable sessions moving between this node and another.
    moves: moves::Moves,
    /// Spawns the backplane's tasks, so shutdown waits for them.
    tracker: TaskTracker,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.tag)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Connects (lazily: a node starts even while Redis is down) and starts the
    /// subscriber, lease, reaper and writer tasks through `tracker`; they stop when
    /// `shutdown` is cancelled. The receiver yields each connection of a node found dead.
    pub fn start(
        settings: &ClusterSettings,
        local: Arc<Local>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, NodeDeaths), redis::RedisError> {
        let redis = Redis::open(settings)?;
        let conn = redis.commands()?;
        let (records, write_rx) = records::RecordWriter::new(settings.write_queue);
        let (deaths, death_rx) = mpsc::channel(DEATH_QUEUE);
        let (sessions, session_rx) = sessions::SessionWriter::new();
        let backplane = Arc::new(Self {
            tag: keys::tag(local.node),
            keys: Keys::new(&settings.key_prefix),
            redis,
            conn,
            local,
            requests: requests::Requests::new(Duration::from_millis(settings.request_timeout_ms)),
            interest: interest::Interest::new(Duration::from_millis(settings.request_timeout_ms)),
            records,
            liveness: liveness::Liveness::new(Duration::from_millis(settings.lease_ttl_ms), deaths),
            sessions: Arc::new(sessions),
            moves: moves::Moves::default(),
            tracker: tracker.clone(),
        });
        tracker.spawn(backplane.clone().subscriber(shutdown.clone()));
        tracker.spawn(backplane.clone().lease_keeper(shutdown.clone()));
        tracker.spawn(backplane.clone().reaper(shutdown.clone()));
        tracker.spawn(
            backplane
                .clone()
                .session_writer(session_rx, shutdown.clone()),
        );
        tracker.spawn(backplane.clone().writer(write_rx, shutdown));
        Ok((backplane, death_rx))
    }

    /// Whether Redis is reachable and this node is registered and subscribed.
    pub fn is_connected(&self) -> bool {
        self.requests.subscribed.load(Ordering::Relaxed)
            && self.liveness.lease_ok.load(Ordering::Relaxed)
    }

    /// Where this node's record writes go (the same writer for local callers and for
    /// requests from other nodes).
    pub fn records(&self) -> &dyn super::Records {
        &self.records
    }

    /// Removes this node's registration (after a graceful shutdown closed its connections,
    /// so no survivor fires `$disconnect` for them again). It also holds its own reaper
    /// claim for a while: survivors that remember this node find the claim taken and
    /// forget it instead of reaping it.
    pub async fn deregister(&self) {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.del(self.keys.lease(&self.tag))
            .del(self.keys.conns(&self.tag))
            .del(self.keys.ids(&self.tag))
            .del(self.keys.memberships(&self.tag))
            .del(self.keys.version(&self.tag))
            .srem(self.keys.broadcast_subscribers(), &self.tag)
            .zrem(self.keys.nodes(), &self.tag);
        pipe.cmd("SET")
            .arg(self.keys.reaper(&self.tag))
            .arg("deregistered")
            .arg("PX")
            .arg(self.liveness.claim_ms());
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            warn!(%error, "could not deregister from Redis");
        }
    }

    // ---- how Redis is reached ----

    /// A handle on the shared command connection.
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Publishes `message` (a `kind` of message, for the metrics) on `channel`; returns how
    /// many subscribers received it.
    async fn publish(
        &self,
        channel: String,
        message: &[u8],
        kind: BackplaneKind,
    ) -> Result<i64, redis::RedisError> {
        let receivers = self.conn().publish(&channel, message).await?;
        metrics::backplane_message(Direction::Out, kind, message.len());
        Ok(receivers)
    }

    /// Publishes a broadcast `message` (a `kind` of message, for the metrics) on `channel`
    /// only if every node listed in the subscriber set `set` is subscribed to it.
    async fn publish_checked(
        &self,
        set: &str,
        channel: &str,
        message: &[u8],
        kind: BackplaneKind,
    ) -> Result<Published, redis::RedisError> {
        let published = self.conn().publish_checked(set, channel, message).await?;
        if published == Published::Delivered {
            metrics::backplane_message(Direction::Out, kind, message.len());
        }
        Ok(published)
    }

    /// A new subscriber link subscribed to `channels` (confirmed), split: the sink
    /// (un)subscribes more channels while the arrivals are read.
    async fn subscribe(&self, channels: &[String]) -> Result<(Sink, Arrivals), redis::RedisError> {
        self.redis.subscribe(channels).await
    }
}
