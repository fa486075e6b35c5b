//! Resumable sessions at the connection-lifecycle seam (docs/resume.md): when a session's
//! socket ends, a resumable connection that dropped abnormally is suspended — kept in the
//! registry, its groups and its history, with no socket — instead of closed; a resume
//! finds it by its token and attaches a new socket; and when its window passes without
//! one (or it is deleted, or the node shuts down) it is closed as any other connection,
//! so `$disconnect` fires exactly once, at the end, never at the drop.
//!
//! A suspended connection is watched by one small task (its window); the counter of
//! suspended sessions bounds how many a node keeps (`resume.max_suspended`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument as _, info};

use super::AppState;
use crate::connections::resume::{Refusal, Token};
use crate::connections::{Close, ConnShared};
use crate::telemetry::metrics;

/// How a session's socket ended, as the seam needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketEnd {
    /// A close handshake, a gateway-side close, or a connection never handed to a client:
    /// the connection closes.
    Closed,
    /// The socket was lost without a close (a read or write error, a ping timeout): a
    /// resumable connection is suspended.
    Dropped,
    /// A resume on a new socket took the connection over: it stays, suspended until the
    /// new socket attaches.
    Superseded,
}

/// The close code given to a suspended session that its client gave up on (it resumed
/// too late, or from an offset the history no longer holds, and started fresh).
const ABANDONED: u16 = 4001;

impl AppState {
    /// A session's socket has ended: close the connection, or, for a resumable one that
    /// dropped, suspend it for its window. Every session ends through here.
    pub fn end_session(self: &Arc<Self>, shared: &Arc<ConnShared>, close: Close, end: SocketEnd) {
        let suspend = shared.resume.is_some()
            && !self.shutdown.is_cancelled()
            && shared.close_request().is_none()
            && match end {
                SocketEnd::Closed => false,
                SocketEnd::Superseded => true,
                SocketEnd::Dropped => {
                    let max = self.api().resume.max_suspended;
                    self.suspended.load(Ordering::Relaxed) < max
                }
            };
        if suspend {
            self.suspend_connection(shared, close);
        } else {
            self.close_connection(shared, close);
        }
    }

    /// Keeps a resumable connection whose socket is gone: messages to it wait in its
    /// history, it stays in its groups, and `$disconnect` waits for its window to pass.
    fn suspend_connection(self: &Arc<Self>, shared: &Arc<ConnShared>, close: Close) {
        let Some(resume) = shared.resume.as_deref() else {
            return;
        };
        resume.detach(&shared.outbox);
        // This suspension's attachment: a resume (even one dropped again since) moves it
        // on, and this suspension's watcher is then done.
        let generation = resume.generation();
        self.suspended.fetch_add(1, Ordering::Relaxed);
        metrics::suspended(1.0);
        let window = Duration::from_secs(self.api().resume.window_secs);
        info!(
            code = close.code,
            window_secs = window.as_secs(),
            "suspended"
        );
        let (state, shared) = (self.clone(), shared.clone());
        self.tracker.spawn(
            async move {
                let deadline = Instant::now() + window;
                let resume = shared.resume.as_deref();
                let ended = loop {
                    tokio::select! {
                        _ = shared.outbox.ready() => {
                            if resume.is_some_and(|r| r.is_attached() || r.generation() != generation) {
                                shared.outbox.wake(); // the wake-up may have been the new session's
                                return;
                            }
                            if let Some(request) = shared.close_request() {
                                break request.clone();
                            }
                        }
                        _ = sleep_until(deadline) => break close,
                        _ = state.shutdown.cancelled() => break Close::going_away(),
                    }
                };
                if resume.is_some_and(|r| r.expire(generation)) {
                    state.suspended.fetch_sub(1, Ordering::Relaxed);
                    metrics::suspended(-1.0);
                    info!("suspended session ended without a resume");
                    state.close_connection(&shared, ended);
                } else {
                    shared.outbox.wake();
                }
            }
            .in_current_span(),
        );
    }

    /// The suspended (or still attached) resumable connection `token` names, if it is
    /// here and can be resumed from `offset`. A connection the token proves the client's
    /// but which cannot be resumed (its history no longer reaches back to `offset`) is
    /// closed now: its client starts fresh.
    pub fn find_resumable(&self, token: &Token, offset: u64) -> Result<Arc<ConnShared>, Refusal> {
        let handle = self
            .cluster
            .local
            .registry
            .get(&token.id)
            .ok_or(Refusal::Unknown)?;
        let resume = handle.shared.resume.as_deref().ok_or(Refusal::Unknown)?;
        if !resume.secret_matches(&token.secret) {
            return Err(Refusal::Unknown);
        }
        if let Err(refusal) = resume.check(offset) {
            handle
                .shared
                .request_close(Close::new(ABANDONED, "Session could not be resumed"));
            return Err(refusal);
        }
        Ok(handle.shared)
    }

    /// Attaches a new socket to a resumable connection after `offset`: takes it over from
    /// a session still holding it (waiting at most `limit` for that one to let go) and
    /// returns the frames to replay before live traffic.
    pub async fn resume_connection(
        &self,
        shared: &ConnShared,
        offset: u64,
        limit: Duration,
    ) -> Result<Vec<Message>, Refusal> {
        let resume = shared.resume.as_deref().ok_or(Refusal::Unknown)?;
        if !resume.take_over(&shared.outbox, limit).await {
            return Err(Refusal::Unknown);
        }
        let replay = resume.attach(offset)?;
        self.suspended.fetch_sub(1, Ordering::Relaxed);
        metrics::suspended(-1.0);
        // The suspended session's watcher ends when it sees the socket attached.
        shared.outbox.wake();
        Ok(replay)
    }
}
