//! This node's records in Redis: connection records, ids and memberships, written by one
//! background writer, and the resync that rewrites all of them from local state.
//!
//! Every write also sets the node's records version (`<p>:{n.<tag>}:version`), which
//! survivors compare to decide whether to re-read the records they remember.
//!
//! Owns the writer's bounded queue and the dirty flag. Callers never wait on Redis: a
//! write that cannot be queued, or a pipeline that fails, marks the node dirty, and the
//! next lease refresh ([`liveness`](super::liveness)) runs [`RedisBackplane::resync`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::AsyncCommands as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::RedisBackplane;
use super::keys;
use crate::cluster::{ConnectionRecord, GroupName, Records};
use crate::connections::{ConnShared, ConnectionId, now_ms};

/// Most commands sent in one pipeline by the writer and by a resync.
const BATCH: usize = 512;

/// A record write waiting for Redis.
#[derive(Debug)]
pub(super) enum Write {
    /// (connection id, record JSON).
    Connected(String, String),
    /// (connection id, the groups it was in).
    Disconnected(String, Vec<Arc<str>>),
    /// (group, connection id).
    Joined(String, String),
    /// (group, connection id).
    Left(String, String),
    /// A session moved to another node: (connection id, the groups it is in). This node's
    /// records of it go; the groups' member sets keep it (the new node holds it now).
    Released(String, Vec<Arc<str>>),
}

/// The writer's queue and whether a write was lost.
pub(super) struct RecordWriter {
    /// Feeds the background writer; bounded so a Redis outage cannot grow memory.
    writes: mpsc::Sender<Write>,
    /// A record write was lost: rewrite everything at the next lease refresh. Starts set,
    /// so the first refresh registers the node.
    dirty: AtomicBool,
}

impl RecordWriter {
    /// A writer whose queue holds `capacity` writes, and the receiver for its task.
    pub(super) fn new(capacity: usize) -> (Self, mpsc::Receiver<Write>) {
        let (writes, rx) = mpsc::channel(capacity);
        let writer = Self {
            writes,
            dirty: AtomicBool::new(true),
        };
        (writer, rx)
    }

    /// Whether a write was lost since the last call (and forgets it).
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Remembers that Redis no longer holds the truth.
    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    fn queue(&self, write: Write) {
        if self.writes.try_send(write).is_err() {
            self.mark_dirty();
        }
    }

    /// A resumable session moved here: its memberships are this node's to keep now.
    pub(super) fn reclaimed(&self, id: &ConnectionId, groups: &[Arc<str>]) {
        for group in groups {
            self.queue(Write::Joined(group.to_string(), id.to_string()));
        }
    }

    /// A resumable session moved to another node: this node no longer records it.
    pub(super) fn released(&self, id: &ConnectionId, groups: &[Arc<str>]) {
        self.queue(Write::Released(id.to_string(), groups.to_vec()));
    }
}

impl Records for RecordWriter {
    fn connected(&self, shared: &ConnShared) {
        let record = serde_json::to_string(&ConnectionRecord::of(shared)).unwrap_or_default();
        self.queue(Write::Connected(shared.info.id_text.clone(), record));
    }

    fn disconnected(&self, id: &ConnectionId, groups: &[Arc<str>]) {
        self.queue(Write::Disconnected(id.to_string(), groups.to_vec()));
    }

    fn joined(&self, group: &GroupName, id: &ConnectionId) {
        self.queue(Write::Joined(group.as_str().to_owned(), id.to_string()));
    }

    fn left(&self, group: &GroupName, id: &ConnectionId) {
        self.queue(Write::Left(group.as_str().to_owned(), id.to_string()));
    }
}

impl RedisBackplane {
    /// Writes queued records in pipelines of up to `BATCH` commands.
    pub(super) async fn writer(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Write>,
        shutdown: CancellationToken,
    ) {
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
                    Write::Released(id, groups) => {
                        pipe.hdel(&conns_key, &id).ignore();
                        pipe.zrem(&ids_key, &id).ignore();
                        for g in groups {
                            pipe.srem(&memberships_key, keys::membership(&g, &id))
                                .ignore();
                        }
                    }
                    Write::Left(g, id) => {
                        pipe.zrem(self.keys.members(&g), &id).ignore();
                        pipe.srem(&memberships_key, keys::membership(&g, &id))
                            .ignore();
                    }
                }
            }
            // Survivors re-read this node's records when the version changes.
            pipe.set(self.keys.version(&self.tag), self.liveness.next_version())
                .ignore();
            let mut conn = self.conn();
            if let Err(error) = pipe.query_async::<()>(&mut conn).await {
                debug!(%error, "record write failed; will resync");
                self.records.mark_dirty();
            }
        }
    }

    /// Writes the truth of this node into Redis: lease, node entry, every connection
    /// record and membership; removes memberships of connections that closed meanwhile.
    pub(super) async fn resync(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.conn();
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
                .arg(self.keys.version(&self.tag))
                .arg(self.liveness.next_version())
                .clone(),
        );
        commands.push(
            redis::cmd("SET")
                .arg(self.keys.lease(&self.tag))
                .arg(now_ms())
                .arg("PX")
                .arg(self.liveness.ttl.as_millis() as u64)
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
}
