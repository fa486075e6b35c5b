//! The Redis backplane: node leases, cross-node requests with acknowledgements, broadcast,
//! cluster-wide records for listing, reaping dead nodes, and recovery after Redis loses
//! its data.
//!
//! - **Requests** (POST, GET, DELETE, join, leave on a remote connection) are published to
//!   the owner's inbox channel; the owner runs them on its local state and publishes the
//!   result to the asker's inbox. No subscriber on the owner's inbox means the owner is
//!   gone (410) — unless its lease is still there or Redis has just restarted, when the
//!   answer is 503 so a live connection is never declared gone by mistake.
//! - **Records** (connect, disconnect, join, leave) are written by one background writer
//!   fed through a bounded queue, so no session ever waits on Redis. A write that cannot be
//!   queued or fails marks the node dirty, and the next lease refresh rewrites everything.
//! - **Listings** page through sorted sets ordered by id (`ZRANGEBYLEX`), so a page holds
//!   at most `limit` entries and its cursor is the last id listed: a connection or member
//!   that stays for the whole listing appears exactly once.
//! - **Leases** are refreshed every third of their TTL with `SET … XX`; finding the lease
//!   missing means Redis lost it, and the node re-registers all it holds.
//! - **Reaping**: each node looks for nodes in `nodes` whose lease is gone; the first to
//!   claim one removes its records and memberships and fires `$disconnect` (1006) for each
//!   of its connections.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::keys::{self, Keys};
use super::local::Local;
use super::wire::{Op, Payload, Wire};
use super::{ConnectionRecord, DeliveryError, GroupName, Page};
use crate::config::ClusterSettings;
use crate::connections::{Close, ConnShared, ConnectionId, SendError, now_ms};
use crate::telemetry::metrics;

/// The connections of nodes found dead, for `$disconnect` (wired by the composition root).
pub type NodeDeaths = mpsc::Receiver<ConnectionRecord>;

/// Records of dead nodes' connections that may wait for the `$disconnect` hook.
const DEATH_QUEUE: usize = 1024;

/// Most commands sent in one pipeline by the writer and by a resync.
const BATCH: usize = 512;

/// A record write waiting for Redis.
#[derive(Debug)]
enum Write {
    Connected(String, String),
    Disconnected(String, Vec<Arc<str>>),
    Joined(String, String),
    Left(String, String),
}

/// A request waiting for its reply: (status, body).
type Pending = oneshot::Sender<(u16, Option<String>)>;

/// The Redis backplane of one node.
pub struct RedisBackplane {
    tag: String,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    local: Arc<Local>,
    /// Requests this node made, by number, until their reply arrives or they time out.
    pending: DashMap<u64, Pending>,
    next_req: AtomicU64,
    /// The subscriber is subscribed and the last lease refresh succeeded.
    subscribed: AtomicBool,
    lease_ok: AtomicBool,
    /// A record write was lost: rewrite everything at the next lease refresh.
    dirty: AtomicBool,
    writes: mpsc::Sender<Write>,
    lease_ttl: Duration,
    request_timeout: Duration,
    /// Each connection of a reaped node, for `$disconnect`.
    deaths: mpsc::Sender<ConnectionRecord>,
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
        let client = redis::Client::open(settings.redis_url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(config)?;
        let (writes, write_rx) = mpsc::channel(settings.write_queue);
        let (deaths, death_rx) = mpsc::channel(DEATH_QUEUE);
        let backplane = Arc::new(Self {
            tag: keys::tag(local.node),
            keys: Keys::new(&settings.key_prefix),
            client,
            conn,
            local,
            pending: DashMap::new(),
            next_req: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            lease_ok: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            writes,
            lease_ttl: Duration::from_millis(settings.lease_ttl_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            deaths,
            tracker: tracker.clone(),
        });
        tracker.spawn(backplane.clone().subscriber(shutdown.clone()));
        tracker.spawn(backplane.clone().lease_keeper(shutdown.clone()));
        tracker.spawn(backplane.clone().reaper(shutdown.clone()));
        tracker.spawn(backplane.clone().writer(write_rx, shutdown));
        Ok((backplane, death_rx))
    }

    /// Whether Redis is reachable and this node is registered and subscribed.
    pub fn is_connected(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.lease_ok.load(Ordering::Relaxed)
    }

    // ---- requests to other nodes ----

    /// Runs `op` on the node that owns `id`; returns the reply body on success.
    pub async fn request(
        &self,
        id: &ConnectionId,
        op: Op,
    ) -> Result<Option<String>, DeliveryError> {
        let started = std::time::Instant::now();
        let result = self.request_inner(id, op).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(DeliveryError::Gone) => "gone",
            Err(DeliveryError::Full) => "full",
            Err(DeliveryError::Unavailable) => "unavailable",
        };
        metrics::backplane_request(started.elapsed().as_secs_f64(), outcome);
        result
    }

    async fn request_inner(
        &self,
        id: &ConnectionId,
        op: Op,
    ) -> Result<Option<String>, DeliveryError> {
        let target = keys::tag(id.node());
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(req, tx);
        let _forget = PendingGuard {
            pending: &self.pending,
            req,
        };
        let message = serde_json::to_string(&Wire::Request {
            from: self.tag.clone(),
            req,
            conn: id.to_string(),
            op,
        })
        .map_err(|_| DeliveryError::Unavailable)?;
        let mut conn = self.conn.clone();
        let receivers: i64 = conn
            .publish(self.keys.inbox(&target), message)
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        if receivers == 0 {
            return Err(self.owner_missing(&target).await);
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok((200 | 204, body))) => Ok(body),
            Ok(Ok((410, _))) => Err(DeliveryError::Gone),
            Ok(Ok((429, _))) => Err(DeliveryError::Full),
            _ => Err(DeliveryError::Unavailable),
        }
    }

    /// Nobody listens on `target`'s inbox: gone, unless its lease lives or Redis has just
    /// restarted (nodes re-register within a lease refresh).
    async fn owner_missing(&self, target: &str) -> DeliveryError {
        let mut conn = self.conn.clone();
        match conn.exists::<_, bool>(self.keys.lease(target)).await {
            Ok(true) => return DeliveryError::Unavailable,
            Ok(false) => {}
            Err(_) => return DeliveryError::Unavailable,
        }
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await;
        let uptime_secs = info.ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        match uptime_secs {
            Some(up) if Duration::from_secs(up) > self.lease_ttl * 2 => DeliveryError::Gone,
            _ => DeliveryError::Unavailable,
        }
    }

    /// Publishes a broadcast for every other node.
    pub async fn publish_broadcast(
        &self,
        group: Option<&str>,
        payload: Payload,
    ) -> Result<(), DeliveryError> {
        let message = serde_json::to_string(&Wire::Broadcast {
            from: self.tag.clone(),
            group: group.map(str::to_owned),
            payload,
        })
        .map_err(|_| DeliveryError::Unavailable)?;
        let mut conn = self.conn.clone();
        conn.publish::<_, _, i64>(self.keys.broadcast(), message)
            .await
            .map(drop)
            .map_err(|_| DeliveryError::Unavailable)
    }

    // ---- listings ----

    /// Every node's connections, node by node in tag order and by id within a node, a page
    /// of at most `limit` at a time. The cursor is the last (node, id) listed, so a page
    /// never repeats or skips a connection that lives through the whole listing.
    pub async fn list_connections(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConnectionRecord>, DeliveryError> {
        let mut conn = self.conn.clone();
        let mut tags: Vec<String> = conn
            .zrange(self.keys.nodes(), 0, -1)
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        tags.sort();
        let (mut tag_index, mut after) = match cursor.and_then(decode_cursor) {
            Some((tag, last)) => {
                let index = tags.iter().position(|t| *t >= tag).unwrap_or(tags.len());
                // Resume after `last` only within the same node (it may have died since).
                let after = (tags.get(index) == Some(&tag)).then_some(last);
                (index, after)
            }
            None => (0, None),
        };
        // Up to limit + 1 (tag, id) pairs: the extra one says whether another page exists.
        let mut found: Vec<(usize, String)> = Vec::new();
        while tag_index < tags.len() && found.len() <= limit {
            let ids = lex_page(
                &mut conn,
                &self.keys.ids(&tags[tag_index]),
                after.take().as_deref(),
                limit + 1 - found.len(),
            )
            .await?;
            found.extend(ids.into_iter().map(|id| (tag_index, id)));
            tag_index += 1;
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let cursor = found
            .last()
            .filter(|_| more)
            .map(|(t, id)| encode_cursor(&tags[*t], id));
        let mut items = Vec::with_capacity(found.len());
        for chunk in found.chunk_by(|a, b| a.0 == b.0) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            let records: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.keys.conns(&tags[chunk[0].0]))
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .map_err(|_| DeliveryError::Unavailable)?;
            items.extend(
                records
                    .iter()
                    .flatten()
                    .filter_map(|json| serde_json::from_str(json).ok()),
            );
        }
        Ok(Page { items, cursor })
    }

    /// A group's members across the cluster, by id, a page of at most `limit` at a time.
    pub async fn list_members(
        &self,
        group: &GroupName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, DeliveryError> {
        let mut conn = self.conn.clone();
        let after = cursor
            .and_then(decode_cursor)
            .filter(|(g, _)| g == group.as_str())
            .map(|(_, last)| last);
        let mut items = lex_page(
            &mut conn,
            &self.keys.members(group.as_str()),
            after.as_deref(),
            limit + 1,
        )
        .await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let cursor = items
            .last()
            .filter(|_| more)
            .map(|last| encode_cursor(group.as_str(), last));
        Ok(Page { items, cursor })
    }

    // ---- record writes (never awaited by callers) ----

    /// Records a new local connection.
    pub fn connected(&self, shared: &ConnShared) {
        let record = serde_json::to_string(&ConnectionRecord::of(shared)).unwrap_or_default();
        self.queue(Write::Connected(shared.info.id_text.clone(), record));
    }

    /// Forgets a closed local connection and its memberships.
    pub fn disconnected(&self, id: &ConnectionId, groups: &[Arc<str>]) {
        self.queue(Write::Disconnected(id.to_string(), groups.to_vec()));
    }

    /// Records a local connection joining a group.
    pub fn joined(&self, group: &str, id: &ConnectionId) {
        self.queue(Write::Joined(group.to_owned(), id.to_string()));
    }

    /// Records a local connection leaving a group.
    pub fn left(&self, group: &str, id: &ConnectionId) {
        self.queue(Write::Left(group.to_owned(), id.to_string()));
    }

    fn queue(&self, write: Write) {
        if self.writes.try_send(write).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Removes this node's registration (after a graceful shutdown closed its connections,
    /// so no survivor fires `$disconnect` for them again).
    pub async fn deregister(&self) {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.del(self.keys.lease(&self.tag))
            .del(self.keys.conns(&self.tag))
            .del(self.keys.ids(&self.tag))
            .del(self.keys.memberships(&self.tag))
            .zrem(self.keys.nodes(), &self.tag);
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            warn!(%error, "could not deregister from Redis");
        }
    }

    // ---- background tasks ----

    /// Keeps a subscription to this node's inbox and the broadcast channel, reconnecting
    /// with backoff, and dispatches what arrives.
    async fn subscriber(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connect = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(self.keys.inbox(&self.tag)).await?;
                pubsub.subscribe(self.keys.broadcast()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = tokio::time::timeout(Duration::from_secs(2), connect) => a,
            };
            match attempt {
                Ok(Ok(pubsub)) => {
                    backoff = Duration::from_millis(100);
                    self.subscribed.store(true, Ordering::Relaxed);
                    info!(node = %self.tag, "backplane subscribed");
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<Wire>(message.get_payload_bytes()) {
                            Ok(wire) => self.dispatch(wire),
                            Err(error) => warn!(%error, "unreadable backplane message"),
                        }
                    }
                    self.subscribed.store(false, Ordering::Relaxed);
                    warn!(node = %self.tag, "backplane subscription lost; reconnecting");
                }
                Ok(Err(error)) => debug!(%error, "backplane subscribe failed"),
                Err(_) => debug!("backplane subscribe timed out"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn dispatch(self: &Arc<Self>, wire: Wire) {
        match wire {
            Wire::Request {
                from,
                req,
                conn,
                op,
            } => {
                let (status, body) = self.run_locally(&conn, op);
                let reply = Wire::Reply { req, status, body };
                let channel = self.keys.inbox(&from);
                let mut redis = self.conn.clone();
                self.tracker.spawn(async move {
                    if let Ok(text) = serde_json::to_string(&reply) {
                        let _ = redis.publish::<_, _, i64>(channel, text).await;
                    }
                });
            }
            Wire::Reply { req, status, body } => {
                if let Some((_, tx)) = self.pending.remove(&req) {
                    let _ = tx.send((status, body));
                }
            }
            Wire::Broadcast { group, payload, .. } => {
                if let Some(message) = payload.into_message() {
                    let fanout = self.local.broadcast(group.as_deref(), &message);
                    debug!(
                        delivered = fanout.delivered,
                        dropped = fanout.dropped,
                        "broadcast delivered"
                    );
                }
            }
        }
    }

    /// Runs a request from another node against local state: (status, body).
    fn run_locally(&self, conn: &str, op: Op) -> (u16, Option<String>) {
        let Some(id) = ConnectionId::parse(conn).filter(|id| id.node() == self.local.node) else {
            return (410, None);
        };
        let status = |r: Result<(), SendError>| match r {
            Ok(()) => 200,
            Err(SendError::Gone) => 410,
            Err(SendError::Full) => 429,
        };
        match op {
            Op::Post { payload } => match payload.into_message() {
                Some(message) => (status(self.local.post(&id, message)), None),
                None => (400, None),
            },
            Op::Get => match self.local.describe(&id) {
                Some(description) => (200, serde_json::to_string(&description).ok()),
                None => (410, None),
            },
            Op::Delete { code, reason } => {
                (status(self.local.close(&id, Close { code, reason })), None)
            }
            Op::Join { group } => {
                match GroupName::parse(&group).map(|name| self.local.join(&name, &id)) {
                    Some(Ok(newly)) => {
                        if newly {
                            self.joined(&group, &id);
                        }
                        (200, None)
                    }
                    Some(Err(e)) => (status(Err(e)), None),
                    None => (400, None),
                }
            }
            Op::Leave { group } => {
                match GroupName::parse(&group).map(|name| self.local.leave(&name, &id)) {
                    Some(Ok(was)) => {
                        if was {
                            self.left(&group, &id);
                        }
                        (200, None)
                    }
                    Some(Err(e)) => (status(Err(e)), None),
                    None => (400, None),
                }
            }
        }
    }

    /// Refreshes the lease every third of its TTL; re-registers everything when the lease
    /// was missing (Redis restarted or lost it) or a record write was lost.
    async fn lease_keeper(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.lease_ttl / 3;
        loop {
            let ok = match self.refresh_lease().await {
                Ok(()) => true,
                Err(error) => {
                    if self.lease_ok.load(Ordering::Relaxed) {
                        warn!(%error, "backplane unreachable: cross-node operations answer 503");
                    }
                    false
                }
            };
            if ok && !self.lease_ok.load(Ordering::Relaxed) {
                info!(node = %self.tag, "backplane connected");
            }
            self.lease_ok.store(ok, Ordering::Relaxed);
            metrics::backplane_connected(self.is_connected());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    async fn refresh_lease(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let ttl = self.lease_ttl.as_millis() as u64;
        let refreshed: Option<String> = redis::cmd("SET")
            .arg(self.keys.lease(&self.tag))
            .arg(now_ms())
            .arg("XX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut conn)
            .await?;
        if (refreshed.is_none() || self.dirty.swap(false, Ordering::Relaxed))
            && let Err(error) = self.resync().await
        {
            self.dirty.store(true, Ordering::Relaxed);
            return Err(error);
        }

        conn.zadd::<_, _, _, ()>(self.keys.nodes(), &self.tag, now_ms())
            .await
    }

    /// Writes the truth of this node into Redis: lease, node entry, every connection
    /// record and membership; removes memberships of connections that closed meanwhile.
    async fn resync(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let conns_key = self.keys.conns(&self.tag);
        let ids_key = self.keys.ids(&self.tag);
        let memberships_key = self.keys.memberships(&self.tag);
        let handles = self.local.registry.handles();
        let memberships: Vec<(String, String)> = self
            .local
            .memberships()
            .into_iter()
            .map(|(g, id)| (g.to_string(), id.to_string()))
            .collect();
        let current: HashSet<String> = memberships
            .iter()
            .map(|(g, id)| keys::membership(g, id))
            .collect();
        let previous: Vec<String> = conn.smembers(&memberships_key).await?;
        let mut commands = Vec::new();
        for entry in previous.iter().filter(|e| !current.contains(*e)) {
            if let Some((group, id)) = entry.split_once('\t') {
                commands.push(
                    redis::cmd("ZREM")
                        .arg(self.keys.members(group))
                        .arg(id)
                        .clone(),
                );
            }
        }
        commands.push(
            // A survivor may have reaped this node while it was cut off; its claim must
            // not outlive the re-registration, or a second death would go unreaped.
            redis::cmd("DEL")
                .arg(&conns_key)
                .arg(&ids_key)
                .arg(&memberships_key)
                .arg(self.keys.reaper(&self.tag))
                .clone(),
        );
        for chunk in handles.chunks(BATCH) {
            let mut hset = redis::cmd("HSET");
            hset.arg(&conns_key);
            for h in chunk {
                hset.arg(&h.shared.info.id_text).arg(
                    serde_json::to_string(&ConnectionRecord::of(&h.shared)).unwrap_or_default(),
                );
            }
            commands.push(hset);
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&ids_key);
            for h in chunk {
                zadd.arg(0).arg(&h.shared.info.id_text);
            }
            commands.push(zadd);
        }
        for (group, id) in &memberships {
            commands.push(
                redis::cmd("ZADD")
                    .arg(self.keys.members(group))
                    .arg(0)
                    .arg(id)
                    .clone(),
            );
            commands.push(
                redis::cmd("SADD")
                    .arg(&memberships_key)
                    .arg(keys::membership(group, id))
                    .clone(),
            );
        }
        commands.push(
            redis::cmd("SET")
                .arg(self.keys.lease(&self.tag))
                .arg(now_ms())
                .arg("PX")
                .arg(self.lease_ttl.as_millis() as u64)
                .clone(),
        );
        for chunk in commands.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for c in chunk {
                pipe.add_command(c.clone()).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        info!(node = %self.tag, connections = handles.len(), memberships = memberships.len(), "registered with the backplane");
        Ok(())
    }

    /// Looks for dead nodes every half lease and cleans up the ones it claims.
    async fn reaper(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.lease_ttl / 2;
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
        let mut conn = self.conn.clone();
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
                .arg(30_000)
                .query_async(&mut conn)
                .await?;
            if claimed.is_some() {
                self.reap(tag).await?;
            }
        }
        Ok(())
    }

    async fn reap(&self, tag: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
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
                let _ = self.deaths.send(record).await;
            }
        }
        Ok(())
    }

    /// Writes queued records in pipelines of up to `BATCH` commands.
    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Write>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, BATCH) => n,
            };
            if received == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            let conns_key = self.keys.conns(&self.tag);
            let ids_key = self.keys.ids(&self.tag);
            let memberships_key = self.keys.memberships(&self.tag);
            for write in batch.drain(..) {
                match write {
                    Write::Connected(id, record) => {
                        pipe.hset(&conns_key, &id, record).ignore();
                        pipe.zadd(&ids_key, &id, 0).ignore();
                    }
                    Write::Disconnected(id, groups) => {
                        pipe.hdel(&conns_key, &id).ignore();
                        pipe.zrem(&ids_key, &id).ignore();
                        for g in groups {
                            pipe.zrem(self.keys.members(&g), &id).ignore();
                            pipe.srem(&memberships_key, keys::membership(&g, &id))
                                .ignore();
                        }
                    }
                    Write::Joined(g, id) => {
                        pipe.zadd(self.keys.members(&g), &id, 0).ignore();
                        pipe.sadd(&memberships_key, keys::membership(&g, &id))
                            .ignore();
                    }
                    Write::Left(g, id) => {
                        pipe.zrem(self.keys.members(&g), &id).ignore();
                        pipe.srem(&memberships_key, keys::membership(&g, &id))
                            .ignore();
                    }
                }
            }
            let mut conn = self.conn.clone();
            if let Err(error) = pipe.query_async::<()>(&mut conn).await {
                debug!(%error, "record write failed; will resync");
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Removes a pending request however `request` ends.
struct PendingGuard<'a> {
    pending: &'a DashMap<u64, Pending>,
    req: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(&self.req);
    }
}

/// Up to `count` members of the sorted set `key` (all scores 0, so ordered by member) that
/// come after `after`, or from the start.
async fn lex_page(
    conn: &mut ConnectionManager,
    key: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<String>, DeliveryError> {
    let min = after.map_or_else(|| "-".to_owned(), |last| format!("({last}"));
    redis::cmd("ZRANGEBYLEX")
        .arg(key)
        .arg(min)
        .arg("+")
        .arg("LIMIT")
        .arg(0)
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|_| DeliveryError::Unavailable)
}

/// A listing cursor: the scope (node tag or group) and the last id listed, opaque to users.
fn encode_cursor(scope: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\t{last}"))
}

fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (scope, last) = text.split_once('\t')?;
    Some((scope.to_owned(), last.to_owned()))
}
