//! The local connection registry: `ConnectionId → ConnHandle` for every connection this
//! node holds.
//!
//! A handle is shared metadata, the connection's outbound queue ([`Outbox`]) and a close
//! request; it never holds the socket (the session task owns that). The outbox's wake-up is
//! the session's only signal from outside: a queued frame or a close request, and both
//! are checked with atomics, no lock, each time it runs. Every queue is bounded
//! twice, in messages and in bytes: a send that would cross either bound fails with
//! [`SendError::Full`] and the caller answers 429. Map guards are never held
//! across an `.await`: lookups clone the handle out.

pub mod id;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

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

/// Milliseconds since the epoch: the clock of `connectedAt`, `lastActiveAt` and events.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A close the gateway was asked to perform (by DELETE, draining, shutdown or policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close code sent to the client and reported to `$disconnect`.
    pub code: u16,
    /// The close reason sent to the client and reported to `$disconnect`.
    pub reason: String,
}

impl CloseRequest {
    /// 1001 "Going away": the node is shutting down.
    pub fn going_away() -> Self {
        Self {
            code: 1001,
            reason: "Going away".to_owned(),
        }
    }
}

/// A connection's outbound queue, bounded in messages and in bytes. It allocates nothing
/// until a first message arrives (most connections are idle), and one lock guards the
/// check-then-push, so concurrent senders cannot overshoot either bound.
#[derive(Debug)]
pub struct Outbox {
    /// Frames waiting, their payload bytes, and whether the session has ended. A std mutex:
    /// held for a push or a pop, never across an `.await`.
    state: Mutex<OutboxState>,
    /// Wakes the session when a frame is queued or a close is requested (a stored permit:
    /// no wake-up is lost).
    ready: Notify,
    /// Most frames that may wait.
    max_messages: usize,
    /// Most payload bytes that may wait.
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Message>,
    bytes: usize,
    closed: bool,
}

impl Outbox {
    /// An empty queue with these bounds.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState::default()),
            ready: Notify::new(),
            max_messages,
            max_bytes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without waiting.
    pub fn push(&self, message: Message) -> Result<(), SendError> {
        let len = message.len();
        {
            let mut state = self.state();
            if state.closed {
                return Err(SendError::Gone);
            }
            if state.frames.len() >= self.max_messages || state.bytes + len > self.max_bytes {
                drop(state);
                metrics::dropped("queue_full", 1);
                return Err(SendError::Full);
            }
            state.frames.push_back(message);
            state.bytes += len;
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next frame, if any, and says whether more are waiting (one lock for both).
    pub fn pop(&self) -> Option<(Message, bool)> {
        let (message, more) = {
            let mut state = self.state();
            let message = state.frames.pop_front()?;
            state.bytes -= message.len();
            let more = !state.frames.is_empty();
            if !more && state.frames.capacity() > 16 {
                state.frames = VecDeque::new(); // give a burst's memory back
            }
            (message, more)
        };
        Some((message, more))
    }

    /// Resolves when a frame may be waiting (spurious wake-ups are possible).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Asks the session to look at the queue and its close request again.
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Refuses further frames and drops the ones still waiting (the session has ended).
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.bytes = 0;
        state.frames = VecDeque::new();
    }

    /// Payload bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.state().bytes
    }
}

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
    close_request: OnceLock<CloseRequest>,
    /// Groups this connection belongs to, so they can be left when it closes. A std mutex:
    /// held only to push, remove or copy, never across an `.await`.
    pub groups: Mutex<Vec<Arc<str>>>,
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
        }
    }

    /// Asks the session to close with `request`; later requests are ignored.
    pub fn request_close(&self, request: CloseRequest) {
        let _ = self.close_request.set(request);
        self.outbox.wake();
    }

    /// The close that was requested, if any (an atomic load: cheap on every wake-up).
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
        self.shared.outbox.push(message)
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
    pub fn close_all(&self, request: &CloseRequest) {
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
