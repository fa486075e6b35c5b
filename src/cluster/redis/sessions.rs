//! Resumable sessions in Redis (cluster mode, docs/resume.md): each session's history as a
//! stream and its state as a hash, both under the session's own hash tag (`{s.<id>}`), so
//! that when the session's node dies another node can resume it with nothing it had
//! accepted lost.
//!
//! Writes (a frame kept, an acknowledgement, a group change, the end) are queued by the
//! session's [`Mirror`] under its history's lock and written in order by one background
//! writer, so no sender ever waits on Redis; a write that cannot be queued is dropped and
//! counted (`switchboard_messages_dropped_total{reason="resume_mirror_full"}`), and a
//! resume on another node then finds a hole in the offsets and starts fresh. Every key
//! expires after the session's TTL (its window plus a socket's longest life), refreshed
//! by each write. Reads (for a resume after the owner died) are one pipeline: the state
//! and the frames after the client's offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::RedisBackplane;
use crate::cluster::{ConnectionRecord, DeliveryError};
use crate::connections::resume::Mirror;
use crate::connections::{ConnShared, ConnectionId};
use crate::telemetry::metrics;

/// Writes that may wait for Redis.
const QUEUE: usize = 65_536;

/// A move's switch of owner: ARGV[2] becomes the holder and ARGV[3] the next offset if the
/// node in ARGV[1] still holds the session and move ARGV[4] was not written off (1), else 0.
static SWITCH_OWNER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
            and redis.call('HEXISTS', KEYS[1], 'off:' .. ARGV[4]) == 0 then
            redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'next', ARGV[3])
            return 1
        end
        return 0",
    )
});

/// Writes move ARGV[2] off (a field `off:<move>` in the session's hash, gone with it) if
/// the node in ARGV[1] still holds the session (1); 0 when it does not (it moved).
static ABANDON_MOVE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
            redis.call('HSET', KEYS[1], 'off:' .. ARGV[2], 1)
            return 1
        end
        return 0",
    )
});

/// Names this node the session's holder if the node in ARGV[1] still is (ARGV[2]: this
/// node): 1 when it did, 0 when another node holds it, or Redis keeps no such session.
static TAKE_OVER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
            redis.call('HSET', KEYS[1], 'owner', ARGV[2])
            return 1
        end
        return 0",
    )
});

/// One write, in the order the sessions made them.
#[derive(Debug)]
pub(super) enum Write {
    /// A new session: its secret and record.
    Opened {
        id: String,
        secret: String,
        record: String,
    },
    /// A frame kept: text (`t`) or binary (`b`).
    Kept {
        id: String,
        offset: u64,
        binary: bool,
        data: Bytes,
    },
    /// Frames up to `offset` need not be kept.
    Acked { id: String, offset: u64 },
    /// A group joined or left.
    Group {
        id: String,
        group: String,
        joined: bool,
    },
    /// The session is over.
    Ended { id: String },
    /// Answered once every write queued before it is in Redis (`true`) or failed.
    Barrier(oneshot::Sender<bool>),
}

/// The queue of writes, and the sizes every write applies (the latest configuration's).
#[derive(Debug)]
pub(super) struct SessionWriter {
    tx: mpsc::Sender<Write>,
    /// Milliseconds every session key lives after its last write.
    ttl_ms: AtomicU64,
    /// Most frames a history stream keeps (approximately: `MAXLEN ~`).
    max_len: AtomicU64,
}

impl SessionWriter {
    /// A writer and the receiving end its task drains.
    pub(super) fn new() -> (Self, mpsc::Receiver<Write>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Self {
            tx,
            ttl_ms: AtomicU64::new(3_600_000),
            max_len: AtomicU64::new(1000),
        };
        (writer, rx)
    }

    fn queue(&self, write: Write) {
        if self.tx.try_send(write).is_err() {
            metrics::dropped("resume_mirror_full", 1);
        }
    }

    /// Waits (at most `limit`) until every write queued so far is in Redis; `false` if one
    /// could not be queued or written, or it took longer.
    pub(super) async fn flushed(&self, limit: std::time::Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.try_send(Write::Barrier(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(true)))
    }
}

impl Mirror for SessionWriter {
    fn kept(&self, id: &ConnectionId, offset: u64, frame: &Message) {
        let (binary, data) = match frame {
            Message::Binary(data) => (true, data.clone()),
            Message::Text(text) => (false, Bytes::from(text.clone())),
            _ => return,
        };
        self.queue(Write::Kept {
            id: id.to_string(),
            offset,
            binary,
            data,
        });
    }

    fn acked(&self, id: &ConnectionId, offset: u64) {
        self.queue(Write::Acked {
            id: id.to_string(),
            offset,
        });
    }

    fn group(&self, id: &ConnectionId, group: &str, joined: bool) {
        self.queue(Write::Group {
            id: id.to_string(),
            group: group.to_owned(),
            joined,
        });
    }

    fn ended(&self, id: &ConnectionId) {
        self.queue(Write::Ended { id: id.to_string() });
    }
}

/// A session as Redis kept it, for a resume on this node after its owner died.
#[derive(Debug)]
pub struct KeptSession {
    /// The token's secret.
    pub secret: String,
    /// What the gateway knew of the connection.
    pub record: ConnectionRecord,
    /// The node that holds it (its original node, or the one that took it over).
    pub owner: String,
    /// The groups it is in.
    pub groups: Vec<String>,
    /// The offset its next frame gets, when a move wrote it (the old node's last
    /// frame is then the one before).
    pub next: Option<u64>,
    /// The frames kept after the client's offset, in order (wire form).
    pub frames: Vec<(u64, Message)>,
}

impl RedisBackplane {
    /// The mirror resumable sessions of this node keep their frames in.
    pub fn session_mirror(&self) -> Arc<dyn Mirror> {
        self.sessions.clone()
    }

    /// A new resumable session: its secret and record go to Redis (queued), with the TTL
    /// and stream length every write of its applies.
    pub fn session_opened(&self, shared: &ConnShared, ttl_ms: u64, max_len: usize) {
        let Some(resume) = shared.resume.as_deref() else {
            return;
        };
        self.size_sessions(ttl_ms, max_len);
        let record = serde_json::to_string(&ConnectionRecord::of(shared)).unwrap_or_default();
        self.sessions.queue(Write::Opened {
            id: shared.info.id_text.clone(),
            secret: resume.secret().to_owned(),
            record,
        });
    }

    /// The TTL and history length every session write applies from now on (the latest
    /// configuration's).
    pub fn size_sessions(&self, ttl_ms: u64, max_len: usize) {
        self.sessions
            .ttl_ms
            .store(ttl_ms.max(1000), Ordering::Relaxed);
        self.sessions
            .max_len
            .store(max_len as u64, Ordering::Relaxed);
    }

    /// Marks a session as held by this node now (it took it over after its holder, the
    /// node tagged `from`, died) — only if `from` is still its holder, so two nodes cannot
    /// both take it over: "gone" when another did.
    pub async fn session_taken_over(
        &self,
        id: &ConnectionId,
        from: &str,
    ) -> Result<(), DeliveryError> {
        let taken: i64 = TAKE_OVER
            .key(self.keys.session(&id.to_string()))
            .arg(from)
            .arg(&self.tag)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        if taken == 1 {
            Ok(())
        } else {
            Err(DeliveryError::Gone)
        }
    }

    /// Names the node tagged `to` as the session's holder, and `next` as the offset its
    /// next frame gets (the holder's half of a move, after its history is in Redis) — only
    /// if `from` still holds it and the asker did not write move `move_id` off.
    pub(super) async fn session_moved(
        &self,
        id: &ConnectionId,
        (from, to): (&str, &str),
        next: u64,
        move_id: &str,
    ) -> Result<(), DeliveryError> {
        let switched: i64 = SWITCH_OWNER
            .key(self.keys.session(&id.to_string()))
            .arg(from)
            .arg(to)
            .arg(next)
            .arg(move_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        if switched == 1 {
            Ok(())
        } else {
            Err(DeliveryError::Unavailable)
        }
    }

    /// The asker's half of a move it got no answer for: writes move `move_id` off unless
    /// the holder (tagged `holder`) already switched the owner. `Ok(false)` when it had
    /// (the session moved), `Ok(true)` when the move is off.
    pub(super) async fn abandon_move(
        &self,
        id: &ConnectionId,
        holder: &str,
        move_id: &str,
    ) -> Result<bool, DeliveryError> {
        let abandoned: i64 = ABANDON_MOVE
            .key(self.keys.session(&id.to_string()))
            .arg(holder)
            .arg(move_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        Ok(abandoned == 1)
    }

    /// The session `id` as Redis kept it, with the frames after `after`; `None` when Redis
    /// keeps no such session.
    pub async fn kept_session(
        &self,
        id: &ConnectionId,
        after: u64,
    ) -> Result<Option<KeptSession>, DeliveryError> {
        let text = id.to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.session(&text));
        pipe.cmd("XRANGE")
            .arg(self.keys.session_history(&text))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+");
        type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;
        let (state, entries): (Vec<(String, Vec<u8>)>, Entries) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        let mut secret = None;
        let mut record = None;
        let mut owner = String::new();
        let mut groups = Vec::new();
        let mut next = None;
        for (field, value) in state {
            let value = String::from_utf8_lossy(&value).into_owned();
            match field.as_str() {
                "secret" => secret = Some(value),
                "record" => record = serde_json::from_str::<ConnectionRecord>(&value).ok(),
                "owner" => owner = value,
                "next" => next = value.parse().ok(),
                f => {
                    if let Some(group) = f.strip_prefix("g:") {
                        groups.push(group.to_owned());
                    }
                }
            }
        }
        let (Some(secret), Some(record)) = (secret, record) else {
            return Ok(None);
        };
        let mut frames = Vec::with_capacity(entries.len());
        for (entry, fields) in entries {
            let offset = entry
                .split_once('-')
                .and_then(|(o, _)| o.parse::<u64>().ok())
                .ok_or(DeliveryError::Malformed)?;
            let Some((field, data)) = fields.into_iter().next() else {
                continue;
            };
            let frame = match field.as_str() {
                "b" => Message::binary(data),
                _ => Message::text(String::from_utf8(data).map_err(|_| DeliveryError::Malformed)?),
            };
            frames.push((offset, frame));
        }
        Ok(Some(KeptSession {
            secret,
            record,
            owner,
            groups,
            next,
            frames,
        }))
    }

    /// Who holds session `id` now, if Redis keeps it: its owner's tag.
    pub async fn session_owner(&self, id: &ConnectionId) -> Result<Option<String>, DeliveryError> {
        redis::cmd("HGET")
            .arg(self.keys.session(&id.to_string()))
            .arg("owner")
            .query_async::<Option<String>>(&mut self.conn())
            .await
            .map_err(|_| DeliveryError::Unavailable)
    }

    /// Forgets session `id` (it ended without a resume after its node died).
    pub async fn forget_session(&self, id: &ConnectionId) {
        let text = id.to_string();
        let mut pipe = redis::pipe();
        pipe.del(self.keys.session(&text))
            .del(self.keys.session_history(&text));
        if let Err(error) = pipe.query_async::<()>(&mut self.conn()).await {
            warn!(%error, "could not forget a resumable session");
        }
    }

    /// Writes what sessions queued, in order, until `shutdown`.
    pub(super) async fn session_writer(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Write>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(64);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, 64) => if n == 0 { return },
            }
            let ttl = self.sessions.ttl_ms.load(Ordering::Relaxed);
            let max_len = self.sessions.max_len.load(Ordering::Relaxed);
            let mut pipe = redis::pipe();
            let mut barriers = Vec::new();
            for write in batch.drain(..) {
                match write {
                    Write::Barrier(done) => barriers.push(done),
                    write => self.add_write(&mut pipe, write, ttl, max_len),
                }
            }
            let written = pipe.is_empty() || {
                let result = pipe.query_async::<()>(&mut self.conn()).await;
                if let Err(error) = &result {
                    metrics::dropped("resume_mirror_failed", 1);
                    warn!(%error, "could not write resumable sessions to Redis");
                }
                result.is_ok()
            };
            for done in barriers {
                let _ = done.send(written);
            }
        }
    }

    fn add_write(&self, pipe: &mut redis::Pipeline, write: Write, ttl: u64, max_len: u64) {
        match write {
            Write::Opened { id, secret, record } => {
                let key = self.keys.session(&id);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("secret")
                    .arg(secret)
                    .arg("record")
                    .arg(record)
                    .arg("owner")
                    .arg(&self.tag)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            }
            Write::Kept {
                id,
                offset,
                binary,
                data,
            } => {
                let key = self.keys.session_history(&id);
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(max_len)
                    .arg(format!("{offset}-0"))
                    .arg(if binary { "b" } else { "t" })
                    .arg(data.as_ref())
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                let session = self.keys.session(&id);
                pipe.cmd("HSET")
                    .arg(&session)
                    .arg("next")
                    .arg(offset + 1)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&session).arg(ttl).ignore();
            }
            Write::Acked { id, offset } => {
                pipe.cmd("XTRIM")
                    .arg(self.keys.session_history(&id))
                    .arg("MINID")
                    .arg(format!("{}-0", offset.saturating_add(1)))
                    .ignore();
            }
            Write::Group { id, group, joined } => {
                let key = self.keys.session(&id);
                if joined {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg(format!("g:{group}"))
                        .arg(1)
                        .ignore();
                } else {
                    pipe.cmd("HDEL")
                        .arg(&key)
                        .arg(format!("g:{group}"))
                        .ignore();
                }
            }
            Write::Ended { id } => {
                pipe.del(self.keys.session(&id)).ignore();
                pipe.del(self.keys.session_history(&id)).ignore();
            }
            Write::Barrier(_) => {}
        }
    }
}
