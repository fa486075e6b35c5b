//! The local connection registry: `ConnectionId → ConnHandle` for every connection this
//! node holds.
//!
//! A handle is a bounded sender into the connection's outbound queue plus shared metadata
//! and a close request; it never holds the socket (the session task owns that). Every
//! queue is bounded twice, in messages and in bytes: a send that would cross either bound
//! fails with [`SendError::Full`] and the caller answers 429. Map guards are never held
//! across an `.await`: lookups clone the handle out.

pub mod id;

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub use id::{ConnectionId, NodeTag};

use crate::telemetry::metrics;

/// What the gateway knows about a connection from its handshake; fixed for its lifetime.
#[derive(Debug)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The id's text form, computed once because every event carries it.
    pub id_text: String,
    /// Epoch milliseconds of the handshake (`requestContext.connectedAt`).
    pub connected_at_ms: i64,
    /// The client's address (`identity.sourceIp`).
    pub source_ip: IpAddr,
    /// The handshake's `User-Agent`, if it had one (`identity.userAgent`).
    pub user_agent: Option<String>,
    /// The stage from the handshake path.
    pub stage: Arc<str>,
    /// The handshake's `Host` header (`requestContext.domainName`).
    pub domain_name: String,
    /// What the authorizer said (`requestContext.authorizer` on every event); `None`
    /// without an authorizer.
    pub authorizer: Option<Arc<crate::auth::AuthorizerContext>>,
}

/// A close the gateway was asked to perform (by DELETE, or by policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code sent to the client and reported to `$disconnect`.
    pub code: u16,
    /// The close reason sent to the client and reported to `$disconnect`.
    pub reason: String,
}

/// State shared between a connection's session task and everyone who may send to it.
#[derive(Debug)]
pub struct ConnShared {
    /// Handshake metadata.
    pub info: ConnInfo,
    /// Epoch milliseconds of the last data frame in either direction (GET `lastActiveAt`).
    pub last_active_ms: AtomicU64,
    /// Bytes waiting in the outbound queue; bounded by `outbound_queue_bytes`.
    pub queued_bytes: AtomicUsize,
    /// Set once when someone asks the session to close; the first request wins.
    close_request: OnceLock<CloseRequest>,
    /// Cancelled to make the session close (with `close_request`, or 1001 on shutdown).
    pub cancel: CancellationToken,
    /// Limit on `queued_bytes`.
    max_queued_bytes: usize,
    /// Guards the check-then-add of `queued_bytes` so concurrent senders cannot overshoot.
    enqueue_lock: Mutex<()>,
    /// Groups this connection belongs to, so they can be left when it closes. A std mutex:
    /// held only to push, remove or copy, never across an `.await`.
    pub groups: Mutex<Vec<Arc<str>>>,
}

impl ConnShared {
    /// New shared state for a connection.
    pub fn new(info: ConnInfo, cancel: CancellationToken, max_queued_bytes: usize) -> Self {
        let now = info.connected_at_ms as u64;
        Self {
            info,
            last_active_ms: AtomicU64::new(now),
            queued_bytes: AtomicUsize::new(0),
            close_request: OnceLock::new(),
            cancel,
            max_queued_bytes,
            enqueue_lock: Mutex::new(()),
            groups: Mutex::new(Vec::new()),
        }
    }

    /// Asks the session to close with `request`; later requests are ignored.
    pub fn request_close(&self, request: CloseRequest) {
        let _ = self.close_request.set(request);
        self.cancel.cancel();
    }

    /// The close that was requested, if any.
    pub fn close_request(&self) -> Option<&CloseRequest> {
        self.close_request.get()
    }

    /// Records activity now.
    pub fn touch(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is not (or no longer) here.
    #[error("connection is gone")]
    Gone,
    /// Its outbound queue is full, in messages or bytes.
    #[error("outbound queue is full")]
    Full,
}

/// A cheap, cloneable way to reach a connection's session.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Bounded queue into the session's writer.
    tx: mpsc::Sender<Message>,
    /// Metadata and the close request.
    pub shared: Arc<ConnShared>,
}

impl ConnHandle {
    /// A handle and the receiving end the session drains.
    pub fn new(shared: Arc<ConnShared>, queue_messages: usize) -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(queue_messages);
        (Self { tx, shared }, rx)
    }

    /// Queues `message` without waiting. Counts its payload against the byte bound; the
    /// session subtracts it again when it writes the frame.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        let len = message.len();
        let _guard = self
            .shared
            .enqueue_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let queued = self.shared.queued_bytes.load(Ordering::Acquire);
        if queued + len > self.shared.max_queued_bytes {
            metrics::dropped("queue_full", 1);
            return Err(SendError::Full);
        }
        match self.tx.try_send(message) {
            Ok(()) => {
                self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
                metrics::queue_bytes(len as f64);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::dropped("queue_full", 1);
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Gone),
        }
    }
}

/// Every connection this node holds.
#[derive(Debug, Default)]
pub struct Registry {
    /// Sharded map so POSTs and sessions on different cores rarely contend.
    connections: DashMap<ConnectionId, ConnHandle>,
}

impl Registry {
    /// Adds a connection.
    pub fn insert(&self, handle: ConnHandle) {
        self.connections.insert(handle.shared.info.id, handle);
    }

    /// Removes a connection; returns whether it was there.
    pub fn remove(&self, id: &ConnectionId) -> bool {
        self.connections.remove(id).is_some()
    }

    /// A clone of the connection's handle (the map guard is dropped before returning).
    /// A connection already asked to close (DELETE, shutdown) counts as gone: nothing
    /// queued for it now would ever be written.
    pub fn get(&self, id: &ConnectionId) -> Option<ConnHandle> {
        self.connections
            .get(id)
            .filter(|h| !h.shared.cancel.is_cancelled())
            .map(|h| h.clone())
    }

    /// Queues a message for a connection.
    pub fn send(&self, id: &ConnectionId, message: Message) -> Result<(), SendError> {
        self.get(id).ok_or(SendError::Gone)?.try_send(message)
    }

    /// Number of connections held.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Calls `f` with every connection's handle. `f` must not block or await: a shard's
    /// read guard is held while it runs.
    pub fn for_each(&self, mut f: impl FnMut(&ConnHandle)) {
        self.connections.iter().for_each(|e| f(e.value()));
    }

    /// Handles of every connection (cloned out; no guard is kept).
    pub fn handles(&self) -> Vec<ConnHandle> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }
}
