//! A connection's outbound queue, bounded in messages and in bytes; its wake-up is the
//! session's only signal from outside (a queued frame or a close request).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::telemetry::metrics;

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

    /// Drops the frames waiting, keeping the queue open (a resumable session's socket is
    /// gone: its history keeps them for a resume).
    pub fn clear(&self) {
        let mut state = self.state();
        state.bytes = 0;
        state.frames = VecDeque::new();
    }

    /// Whether the session has ended (frames are refused).
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Payload bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.state().bytes
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
