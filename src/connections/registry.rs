//! The local registry: `ConnectionId → ConnHandle` for every connection this node holds,
//! and the state a connection's session shares with everyone who may send to it.
//!
//! A handle never holds the socket (the session task owns that). Map guards are never
//! held across an `.await`: lookups clone the handle out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Message;

use super::resume::Resumable;
use super::{Close, ConnInfo, ConnectionId, Outbox, SendError};

/// State shared between a connection's session task and everyone who may send to it.
#[derive(Debug)]
pub struct ConnShared {
    /// Handshake metadata.
    pub info: ConnInfo,
    /// Epoch milliseconds of the last data frame in either direction (GET `lastActiveAt`).
    pub last_active_ms: AtomicU64,
    /// Frames waiting to be written to the client; its wake-up also signals a close request.
    pub outbox: Outbox,
    /// Set once when someone asks the session to close; the first request wins.
    close_request: OnceLock<Close>,
    /// Groups this connection belongs to, so they can be left when it closes. A std mutex:
    /// held only to push, remove or copy, never across an `.await`.
    pub groups: Mutex<Vec<Arc<str>>>,
    /// A resumable session's token, offsets and history (`switchboard.resume.v1`); `None`
    /// for every other connection, whose frames go straight to the outbox.
    pub resume: Option<Box<Resumable>>,
}

impl ConnShared {
    /// New shared state for a connection whose outbound queue holds at most
    /// `queue_messages` frames and `queue_bytes` bytes.
    pub fn new(info: ConnInfo, queue_messages: usize, queue_bytes: usize) -> Self {
        let now = info.connected_at_ms as u64;
        Self {
            info,
            last_active_ms: AtomicU64::new(now),
            outbox: Outbox::new(queue_messages, queue_bytes),
            close_request: OnceLock::new(),
            groups: Mutex::new(Vec::new()),
            resume: None,
        }
    }

    /// New shared state for a resumable connection (see [`Resumable`]).
    pub fn resumable(info: ConnInfo, queue: (usize, usize), resume: Resumable) -> Self {
        Self {
            resume: Some(Box::new(resume)),
            ..Self::new(info, queue.0, queue.1)
        }
    }

    /// Queues `message` for the client without waiting: in the outbox, or for a
    /// resumable connection numbered and kept in its history (and queued while a socket
    /// is attached).
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        match &self.resume {
            None => self.outbox.push(message),
            Some(resume) => resume.push(&self.outbox, &message),
        }
    }

    /// Asks the session to close with `request`; later requests are ignored.
    pub fn request_close(&self, request: Close) {
        let _ = self.close_request.set(request);
        self.outbox.wake();
    }

    /// The close that was requested, if any (an atomic load: cheap on every wake-up).
    pub fn close_request(&self) -> Option<&Close> {
        self.close_request.get()
    }

    /// Records activity now.
    pub fn touch(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// A cheap, cloneable way to reach a connection's session.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Metadata, the outbound queue and the close request.
    pub shared: Arc<ConnShared>,
}

impl ConnHandle {
    /// A handle on `shared`.
    pub fn new(shared: Arc<ConnShared>) -> Self {
        Self { shared }
    }

    /// Queues `message` without waiting (see [`Outbox::push`]).
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.shared.send(message)
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
            .filter(|h| h.shared.close_request().is_none())
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

    /// Asks every connection to close with `request` (shutdown).
    pub fn close_all(&self, request: &Close) {
        self.for_each(|h| h.shared.request_close(request.clone()));
    }

    /// Payload bytes waiting in every connection's outbound queue (read when metrics are
    /// scraped: one short lock per connection).
    pub fn queued_bytes(&self) -> usize {
        let mut total = 0;
        self.for_each(|h| total += h.shared.outbox.queued_bytes());
        total
    }

    /// Handles of every connection (cloned out; no guard is kept).
    pub fn handles(&self) -> Vec<ConnHandle> {
        self.connections.iter().map(|e| e.value().clone()).collect()
    }
}
