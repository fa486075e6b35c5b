//! Resumable sessions at the connection-lifecycle seam (docs/resume.md): when a session's
//! socket ends, a resumable connection that dropped abnormally is suspended — kept in the
//! registry, its groups and its history, with no socket — instead of closed; a resume
//! finds it by its token and attaches a new socket; and when its window passes without
//! one (or it is deleted, or the node shuts down) it is closed as any other connection,
//! so `$disconnect` fires exactly once, at the end, never at the drop.
//!
//! A suspended connection is watched by one small task (its window); the counter of
//! suspended sessions bounds how many a node keeps (`resume.max_suspended`).
//!
//! Cluster mode adds where a resume may find its session: on another live node (it moves
//! here: `cluster::redis::moves`), or kept in Redis for a node that died — which its reaper
//! adopts before forgetting the dead node ([`AppState::node_died_with`]), so the session
//! is always held by a live node once its node is known dead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument as _, info};

use super::AppState;
use crate::cluster::redis::KeptSession;
use crate::cluster::{DeliveryError, GroupName};
use crate::connections::resume::{Mirror, Refusal, Resumable, Token};
use crate::connections::{Close, ConnShared, SendError};
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

/// The offset after the last of `frames` if they are consecutive from `offset + 1` (the
/// whole gap after the client's offset), else `None`.
fn consecutive_after(offset: u64, frames: &[(u64, Message)]) -> Option<u64> {
    let mut expected = offset.checked_add(1)?;
    for (o, _) in frames {
        if *o != expected {
            return None;
        }
        expected += 1;
    }
    Some(expected)
}

/// Drops from `frames` all but the consecutive run ending just before `next`: what a
/// resume can replay without a hole.
fn keep_replayable_tail(frames: &mut Vec<(u64, Message)>, next: u64) {
    let run = frames
        .iter()
        .rev()
        .zip((0..next).rev())
        .take_while(|((o, _), want)| o == want)
        .count();
    frames.drain(..frames.len() - run);
}

/// Runs `attempt`, and again up to `tries` more times ([`ADOPTION_RETRY`] apart) while
/// `again` says its answer is worth asking again.
async fn asked_again<T, F: std::future::Future<Output = T>>(
    tries: usize,
    mut attempt: impl FnMut() -> F,
    again: impl Fn(&T) -> bool,
) -> T {
    let mut answer = attempt().await;
    for _ in 0..tries {
        if !again(&answer) {
            break;
        }
        tokio::time::sleep(ADOPTION_RETRY).await;
        answer = attempt().await;
    }
    answer
}

/// A session [`AppState::suspended_here`] built is this node's now.
fn confirm(shared: &ConnShared) {
    if let Some(resume) = shared.resume.as_deref() {
        resume.confirm();
    }
}

/// Lets go of a session [`AppState::suspended_here`] built that did not become this node's:
/// its window's watcher ends it without `$disconnect` (as a session that moved away).
fn give_up(shared: &ConnShared) {
    if let Some(resume) = shared.resume.as_deref() {
        resume.hand_off();
    }
    shared.outbox.wake();
}

/// Whether two secrets are equal (constant time).
fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// How many more times an adoption asks Redis after it failed (a failover takes about a
/// second)...
const ADOPTION_TRIES: usize = 5;
/// ...and how long it waits between tries.
const ADOPTION_RETRY: Duration = Duration::from_millis(300);

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
                let mut deadline = Instant::now() + window;
                let resume = shared.resume.as_deref();
                let moved_away = || {
                    // Another node holds it now (a resume reached it there, or it was
                    // never confirmed here): its `$disconnect` is that node's.
                    state.suspended.fetch_sub(1, Ordering::Relaxed);
                    metrics::suspended(-1.0);
                    metrics::connection_moved();
                    info!("suspended session moved to another node");
                };
                let ended = loop {
                    tokio::select! {
                        _ = shared.outbox.ready() => {
                            if resume.is_some_and(Resumable::has_moved) {
                                return moved_away();
                            }
                            if resume.is_some_and(|r| r.is_attached() || r.generation() != generation) {
                                shared.outbox.wake(); // the wake-up may have been the new session's
                                return;
                            }
                            if let Some(request) = shared.close_request() {
                                break request.clone();
                            }
                        }
                        _ = sleep_until(deadline) => {
                            if resume.is_some_and(Resumable::is_pinned) {
                                // A move or an adoption is being decided: it ends soon.
                                deadline = Instant::now() + Duration::from_millis(500);
                                continue;
                            }
                            break close;
                        }
                        _ = state.shutdown.cancelled() => break Close::going_away(),
                    }
                };
                if resume.is_some_and(|r| r.expire(generation)) {
                    state.suspended.fetch_sub(1, Ordering::Relaxed);
                    metrics::suspended(-1.0);
                    info!("suspended session ended without a resume");
                    state.close_connection(&shared, ended);
                } else if resume.is_some_and(Resumable::has_moved) {
                    moved_away();
                } else {
                    shared.outbox.wake();
                }
            }
            .in_current_span(),
        );
    }

    /// The suspended (or still attached) resumable connection `token` names, if it is
    /// here — or, in cluster mode, held by another node (it moves here) or kept in Redis by
    /// a node that died (this node takes it over) — and can be resumed from `offset`. A
    /// connection the token proves the client's but which cannot be resumed (its history no
    /// longer reaches back to `offset`) is closed now: its client starts fresh.
    pub async fn find_resumable(
        self: &Arc<Self>,
        token: &Token,
        offset: u64,
    ) -> Result<Arc<ConnShared>, Refusal> {
        if self.cluster.local.in_transit(&token.id) {
            return Err(Refusal::Busy); // moving between nodes (another resume asked)
        }
        let Some(handle) = self.cluster.local.registry.get(&token.id) else {
            // Cluster mode: another node may hold it (even one this node gave out: it moved).
            // Run to its end even if the handshake is dropped meanwhile: a move or a
            // takeover half done would leave the session nowhere.
            let (state, token) = (self.clone(), token.clone());
            let task = self.tracker.spawn(
                async move { state.take_over_session(&token, offset).await }.in_current_span(),
            );
            return task.await.unwrap_or(Err(Refusal::Busy));
        };
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

    /// Cluster mode: a session another node holds (or held). While that node is alive the
    /// session moves here from it ([`AppState::move_session_here`]); while it may still be
    /// alive, the client is asked to retry ([`Refusal::Busy`]); once it is gone, the
    /// session is rebuilt here from what Redis kept — its record, groups and every frame
    /// after `offset` — and suspended, for the resume to attach.
    async fn take_over_session(
        self: &Arc<Self>,
        token: &Token,
        offset: u64,
    ) -> Result<Arc<ConnShared>, Refusal> {
        let Some(mirror) = self.cluster.resume_mirror() else {
            return Err(Refusal::Unknown);
        };
        let alive = match self.cluster.describe(&token.id).await {
            Err(DeliveryError::Gone) => false,
            Err(_) => return Err(Refusal::Busy),
            Ok(_) => true,
        };
        let kept = self
            .cluster
            .kept_session(&token.id, offset)
            .await
            .map_err(|_| Refusal::Busy)?
            .ok_or(Refusal::Unknown)?;
        if !constant_time_eq(&kept.secret, &token.secret) {
            return Err(Refusal::Unknown);
        }
        if kept.owner == self.cluster.local.node.to_string() {
            // This node holds it, or is taking it on (an adoption or a move not finished):
            // the retry finds it here.
            return Err(Refusal::Busy);
        }
        if alive {
            return self.move_session_here(token, offset, kept, mirror).await;
        }
        let Some(next) = consecutive_after(offset, &kept.frames) else {
            self.cluster.forget_session(&token.id).await;
            return Err(Refusal::Trimmed);
        };
        self.adopt_kept(token.id, kept, next, mirror, 0)
            .await
            .map_err(|e| match e {
                DeliveryError::Malformed => Refusal::Unknown,
                // Another node took it over (the retry finds it there), or Redis cannot
                // answer now.
                _ => Refusal::Busy,
            })
    }

    /// Takes over resumable session `id` from what Redis `kept` of it — its frames already
    /// those a resume can replay, `next` the offset its next frame gets — from its holder
    /// (`kept.owner`), which died: built here suspended, made this node's (a compare-and-set
    /// on the owner, asked again up to `tries` more times while Redis cannot answer), its
    /// groups joined. "Gone" when another node took it over first; "malformed" when its
    /// record does not parse.
    async fn adopt_kept(
        self: &Arc<Self>,
        id: crate::connections::ConnectionId,
        kept: KeptSession,
        next: u64,
        mirror: Arc<dyn Mirror>,
        tries: usize,
    ) -> Result<Arc<ConnShared>, DeliveryError> {
        let info = kept.record.info().ok_or(DeliveryError::Malformed)?;
        let api = self.api();
        let resume = Resumable::adopted(
            kept.secret,
            kept.frames,
            next,
            (api.resume.max_messages, api.resume.max_bytes),
        )
        .mirrored(id, mirror);
        let shared = self
            .suspended_here(info, resume, "Its node died")
            .ok_or(DeliveryError::Unavailable)?;
        let adopted = asked_again(
            tries,
            || self.cluster.adopt(&shared, &kept.owner),
            |answer| *answer == Err(DeliveryError::Unavailable),
        )
        .await;
        if let Err(error) = adopted {
            give_up(&shared);
            return Err(error);
        }
        for group in &kept.groups {
            if let Some(group) = GroupName::parse(group) {
                let _ = self.cluster.join(&group, &id).await;
            }
        }
        confirm(&shared);
        info!(conn = %shared.info.id_text, dead_node = %kept.owner, next, "took over a resumable session of a node that died");
        Ok(shared)
    }

    /// A session built here from what another node held (`resume` over `info`), suspended
    /// at once — its window starts now — before anything can find it, so a resume that
    /// attaches as soon as it is visible finds it suspended; `None` while shutting down.
    /// [`give_up`] undoes it when it does not become this node's.
    fn suspended_here(
        self: &Arc<Self>,
        info: crate::connections::ConnInfo,
        resume: Resumable,
        why: &str,
    ) -> Option<Arc<ConnShared>> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let api = self.api();
        let queue = (
            api.client.outbound_queue_messages,
            api.client.outbound_queue_bytes,
        );
        let ttl_ms = (api.resume.window_secs + api.client.max_lifetime_secs).saturating_mul(1000);
        self.cluster.size_sessions(ttl_ms, api.resume.max_messages);
        let shared = Arc::new(ConnShared::resumable(info, queue, resume));
        metrics::connection_opened();
        self.suspend_connection(&shared, Close::abnormal(why));
        Some(shared)
    }

    /// Cluster mode: moves session `token` names from its holder, alive (`kept` is what
    /// Redis keeps of it), to this node ([`crate::cluster::Cluster::receive_session`]):
    /// once moved, it gets the frames after `offset` from Redis and is suspended here, for
    /// the resume to attach. A session that moved but cannot be resumed from `offset` is
    /// closed here (`$disconnect` once); one that did not move stays where it was.
    async fn move_session_here(
        self: &Arc<Self>,
        token: &Token,
        offset: u64,
        kept: KeptSession,
        mirror: Arc<dyn Mirror>,
    ) -> Result<Arc<ConnShared>, Refusal> {
        let info = kept.record.info().ok_or(Refusal::Unknown)?;
        let api = self.api();
        let resume =
            Resumable::arriving(kept.secret, (api.resume.max_messages, api.resume.max_bytes))
                .mirrored(token.id, mirror);
        let shared = self
            .suspended_here(info, resume, "Moved from another node")
            .ok_or(Refusal::Busy)?;
        *shared.groups.lock().unwrap_or_else(|p| p.into_inner()) = kept
            .groups
            .iter()
            .filter(|g| GroupName::parse(g).is_some())
            .map(|g| Arc::from(g.as_str()))
            .collect();
        let received = self
            .cluster
            .receive_session(&shared, &kept.owner, &token.secret)
            .await;
        if let Err(error) = received {
            give_up(&shared);
            return Err(match error {
                DeliveryError::Gone => Refusal::Unknown,
                _ => Refusal::Busy,
            });
        }
        let refusal = match self.cluster.kept_session(&token.id, offset).await {
            Ok(Some(moved)) => match (moved.next, consecutive_after(offset, &moved.frames)) {
                (Some(next), _) if offset >= next => Some(Refusal::BadOffset),
                (Some(next), Some(end)) if end == next => {
                    if let Some(resume) = shared.resume.as_deref() {
                        resume.arrived(moved.frames, next);
                    }
                    None
                }
                _ => Some(Refusal::Trimmed),
            },
            _ => Some(Refusal::Unknown),
        };
        // It is this node's now: operations on it run, and its window may end it.
        confirm(&shared);
        self.cluster.local.end_transit(token.id);
        info!(conn = %shared.info.id_text, from = %kept.owner, "moved a resumable session here from a live node");
        if let Some(refusal) = refusal {
            shared.request_close(Close::new(ABANDONED, "Session could not be resumed"));
            return Err(refusal);
        }
        Ok(shared)
    }

    /// A connection of a node found dead, handed to this node (its reaper) before the dead
    /// node is forgotten. A resumable session Redis keeps is adopted here — suspended, its
    /// groups joined, for its client to resume through any node within a new window (it
    /// moves from here); `$disconnect` fires when that window passes without a resume. Any
    /// other connection gets `$disconnect` now.
    pub fn node_died_with(self: &Arc<Self>, death: crate::cluster::NodeDeath) {
        let crate::cluster::NodeDeath {
            node,
            record,
            lives_on,
        } = death;
        let id = crate::connections::ConnectionId::parse(&record.connection_id);
        let (Some(id), true) = (id, self.api().resume.enabled) else {
            self.connection_lost(&record);
            let _ = lives_on.send(false);
            return;
        };
        let state = self.clone();
        self.tracker.spawn(async move {
            // A dead node's thousands of sessions are adopted a bounded number at a time.
            let _permit = state.adoptions.clone().acquire_owned().await.ok();
            let lives = state.adopt_orphan(id, &node).await;
            if !lives {
                state.connection_lost(&record);
            }
            let _ = lives_on.send(lives);
        });
    }

    /// Adopts resumable session `id` of the dead node tagged `dead` from what Redis keeps
    /// (every frame kept, the offset its next frame gets); `true` when it lives on (here, or
    /// on a node that took it over first).
    async fn adopt_orphan(
        self: &Arc<Self>,
        id: crate::connections::ConnectionId,
        dead: &str,
    ) -> bool {
        let Some(mirror) = self.cluster.resume_mirror() else {
            return false;
        };
        if self.shutdown.is_cancelled() {
            return false; // what Redis keeps of it stays, for another node
        }
        // Redis may be failing over: a few tries before the session is given up.
        let read = asked_again(
            ADOPTION_TRIES,
            || self.cluster.kept_session(&id, 0),
            Result::is_err,
        )
        .await;
        let mut kept = match read {
            Ok(Some(kept)) => kept,
            Ok(None) => return false, // not resumable: `$disconnect` now, as before
            Err(_) => {
                // Given up: what Redis may still keep of it must not revive it later.
                self.cluster.forget_session(&id).await;
                return false;
            }
        };
        if kept.owner != dead {
            return true; // another node holds it already
        }
        let next = kept
            .frames
            .last()
            .map_or(1, |(o, _)| o + 1)
            .max(kept.next.unwrap_or(1));
        keep_replayable_tail(&mut kept.frames, next);
        match self
            .adopt_kept(id, kept, next, mirror, ADOPTION_TRIES)
            .await
        {
            Ok(_) | Err(DeliveryError::Gone) => true, // here, or another node took it over
            Err(DeliveryError::Malformed) => false,
            Err(_) => {
                self.cluster.forget_session(&id).await;
                false
            }
        }
    }

    /// Sends a reply to resumable connection `shared`; one that finds the session moved to
    /// another node meanwhile (its integration call outlived the move) is forwarded to the
    /// node holding it now, asked again while the move is still being decided, and counted
    /// as dropped (`resume_reply_lost`) if it cannot be delivered within the cluster's
    /// request timeout.
    pub fn send_reply(self: &Arc<Self>, shared: &Arc<ConnShared>, reply: Message) {
        let moving = |s: &ConnShared| {
            s.resume
                .as_deref()
                .is_some_and(|r| r.has_moved() || r.is_pinned())
        };
        if shared.send(reply.clone()) != Err(SendError::Gone) || !moving(shared) {
            return;
        }
        let (state, id) = (self.clone(), shared.info.id);
        self.tracker.spawn(
            async move {
                for _ in 0..40 {
                    match state.cluster.post(&id, reply.clone()).await {
                        Ok(()) => return,
                        Err(DeliveryError::Unavailable) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(_) => break,
                    }
                }
                metrics::dropped("resume_reply_lost", 1);
            }
            .in_current_span(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(offsets: &[u64]) -> Vec<(u64, Message)> {
        offsets
            .iter()
            .map(|o| (*o, Message::text(o.to_string())))
            .collect()
    }

    fn offsets(frames: &[(u64, Message)]) -> Vec<u64> {
        frames.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn the_frames_a_resume_can_replay_are_the_run_without_a_hole() {
        assert_eq!(consecutive_after(3, &frames(&[4, 5, 6])), Some(7));
        assert_eq!(consecutive_after(3, &frames(&[])), Some(4));
        assert_eq!(consecutive_after(3, &frames(&[5, 6])), None, "a hole");
        assert_eq!(consecutive_after(u64::MAX, &frames(&[])), None);
        let mut kept = frames(&[2, 3, 5, 6, 7]);
        keep_replayable_tail(&mut kept, 8);
        assert_eq!(offsets(&kept), [5, 6, 7]);
        let mut kept = frames(&[2, 3]);
        keep_replayable_tail(&mut kept, 9);
        assert!(kept.is_empty(), "a frame after them was lost");
    }
}
