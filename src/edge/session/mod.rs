//! The session: one task per connection that owns the socket.
//!
//! It `select!`s over its bounded outbound queue — whose wake-up also carries close requests
//! (DELETE, draining, shutdown) — finished integration calls, inbound frames and one timer
//! (idle, lifetime, ping).
//! Integration calls run in their own tasks so a slow backend never blocks the read loop;
//! at `max_inflight_per_connection` the session stops reading until one finishes, and TCP
//! pushes back on the client. After the loop, the close handshake ([`closing`]) and then
//! the connection's close ([`AppState::close_connection`]: deregistration, `$disconnect`)
//! run in one place.
//!
//! - [`inbound`]: what one frame from the client leads to, and the integration call;
//! - [`write`]: bounded writes and the slow-consumer policy;
//! - [`closing`]: the close handshake and lingering until the client closes.
//!
//! A resumable connection (`switchboard.resume.v1`) starts with its [`Greeting`], sends
//! every frame through its history (numbered, kept until acknowledged), and lets go of its
//! socket when a resume elsewhere takes it over ([`Ending::Superseded`]); how the socket
//! ended decides whether the connection closes or is suspended
//! ([`AppState::end_session`]).
//!
//! Activity (for the idle timer and `lastActiveAt`): data frames in either direction, and
//! pings/pongs from the client only when `pings_count_as_activity` is set.

mod closing;
mod inbound;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tracing::Instrument as _;

use super::fragments::FragmentGuard;
use crate::api::Api;
use crate::connections::{Close, ConnShared, now_ms};
use crate::state::AppState;
use crate::state::resume::SocketEnd;
use crate::throttle::ConnLimits;
use inbound::Step;
use write::{bounded, write_queued};

/// The socket as the session owns it: the client's, its inbound frames counted per message.
type Ws = WebSocketStream<FragmentGuard<crate::tls::ClientIo>>;

/// What a resumable session's socket starts with (docs/resume.md): the welcome frame, then
/// the frames a resume replays, before anything queued.
#[derive(Debug)]
pub struct Greeting {
    /// `{"$sb":"welcome",…}`.
    pub welcome: Message,
    /// Frames after the client's offset, in order (empty for a new session).
    pub replay: Vec<Message>,
    /// Whether this socket resumed a suspended session.
    pub resumed: bool,
}

/// Why the loop ended.
pub(super) enum Ending {
    /// The client sent a close frame (its code and reason, if any).
    ClientClosed(Option<CloseFrame>),
    /// The gateway closes with this code: send it, wait for the client to close.
    ServerCloses(Close),
    /// The socket is unusable; nothing can be sent.
    Dropped(Close),
    /// A resume on a new socket took the (resumable) connection over: this socket is let
    /// go, the connection stays.
    Superseded,
}

/// Runs a connection until it closes, then cleans up.
///
/// A plain `fn` returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps its arguments twice in the future (as captured values and as moved locals), and
/// this future lives as long as the connection (measured: `-Zprint-type-sizes`).
pub fn run(
    state: Arc<AppState>,
    api: Arc<Api>,
    shared: Arc<ConnShared>,
    ws: Ws,
    limits: ConnLimits,
    greeting: Option<Box<Greeting>>,
) -> impl Future<Output = ()> + Send {
    let (mut ws, mut limits) = (ws, limits);
    async move {
        let write_grace = Duration::from_millis(api.client.slow_consumer_grace_ms);
        let greeted = match greeting {
            None => None,
            Some(greeting) => Box::pin(greet(&mut ws, &shared, write_grace, *greeting)).await,
        };
        let started = Instant::now();
        let mut last_activity = started;
        let idle = api.idle_timeout();
        let lifetime_end = started + api.max_lifetime();
        let ping_interval = api.ping_interval();
        let mut next_ping = ping_interval.map(|p| started + p);
        let mut awaiting_pong = false;
        let deadline = |last_activity: Instant, next_ping: Option<Instant>| {
            let d = (last_activity + idle).min(lifetime_end);
            next_ping.map_or(d, |p| d.min(p))
        };
        let timer = sleep_until(deadline(last_activity, next_ping));
        tokio::pin!(timer);
        let mut inflight: JoinSet<Option<Message>> = JoinSet::new();
        let max_inflight = api.client.max_inflight_per_connection;
        // At `limits.max_inflight_per_node` a call waits here and reading pauses, as at the
        // per-connection cap.
        let mut calls = limits.limits().call_gate();

        let ending = if let Some(ending) = greeted {
            ending
        } else {
            loop {
                tokio::select! {
                    biased;
                    _ = shared.outbox.ready() => {
                        if shared.close_request().is_some() || superseded(&shared) {
                            break requested_close(&shared);
                        }
                        let Some(first) = shared.outbox.pop() else {
                            continue; // a spurious wake-up
                        };
                        last_activity = Instant::now();
                        if let Some(end) = bounded(&shared, write_grace, write_queued(&mut ws, &shared, first)).await {
                            break end;
                        }
                    }
                    Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                        if let Ok(Some(reply)) = done {
                            // (A resumable connection's replies are sent through its history.)
                            last_activity = Instant::now();
                            shared.touch(now_ms() as u64);
                            if let Some(end) = bounded(&shared, write_grace, ws.send(reply)).await {
                                break end;
                            }
                        }
                    }
                    call = calls.ready(), if calls.is_parked() => {
                        inflight.spawn(call);
                    }
                    frame = ws.next(), if inflight.len() < max_inflight && !calls.is_parked() => {
                        awaiting_pong = false;
                        // Routes come from the current API, so a reload applies to the next message.
                        let current = state.api();
                        let step = inbound::on_frame(frame, &state, &current, &shared, &mut limits, &mut last_activity);
                        let reply = match step {
                            Step::Read => continue,
                            Step::End(ending) => break ending,
                            Step::Send(frame) if shared.resume.is_some() => {
                                let _ = shared.send(frame);
                                continue;
                            }
                            Step::Send(frame) => frame,
                            Step::Call(route, message) if route.integration.is_mock() => {
                                // A mock does no I/O: answer inline, without a task or a call slot,
                                // and with borrowed state (no shared reference counts touched).
                                // Boxed, so its state is not part of every idle session's future.
                                match Box::pin(inbound::call_route(&state, &current, &shared, route, message)).await {
                                    Some(reply) if shared.resume.is_some() => {
                                        state.send_reply(&shared, reply);
                                        continue;
                                    }
                                    Some(reply) => reply,
                                    None => continue,
                                }
                            }
                            Step::Call(route, message) => {
                                let (state, api, shared, route) = (state.clone(), current.clone(), shared.clone(), route.clone());
                                let call = async move {
                                    let reply = inbound::call_route(&state, &api, &shared, &route, message).await;
                                    match (reply, &shared.resume) {
                                        // Numbered and kept, so a reply survives a drop (and
                                        // follows the session if it moves to another node).
                                        (Some(reply), Some(_)) => {
                                            state.send_reply(&shared, reply);
                                            None
                                        }
                                        (reply, _) => reply,
                                    }
                                };
                                calls.start(&mut inflight, call.in_current_span());
                                continue;
                            }
                        };
                        if let Some(end) = bounded(&shared, write_grace, ws.send(reply)).await {
                            break end;
                        }
                    }
                    _ = &mut timer => {
                        let now = Instant::now();
                        if now >= lifetime_end || now >= last_activity + idle {
                            break Ending::ServerCloses(Close::going_away());
                        }
                        if let Some(at) = next_ping.filter(|at| now >= *at) {
                            if awaiting_pong {
                                break Ending::Dropped(Close::abnormal("Ping timeout"));
                            }
                            awaiting_pong = true;
                            next_ping = ping_interval.map(|p| at + p);
                            if let Some(end) = bounded(&shared, write_grace, ws.send(Message::Ping(Bytes::new()))).await {
                                break end;
                            }
                        }
                        timer.as_mut().reset(deadline(last_activity, next_ping));
                    }
                }
            }
        };

        // Calls still in flight finish on their own; their answers have nowhere to go
        // (a resumable connection's go to its history).
        inflight.detach_all();
        let end = match ending {
            Ending::Dropped(_) => SocketEnd::Dropped,
            Ending::Superseded => SocketEnd::Superseded,
            Ending::ClientClosed(_) | Ending::ServerCloses(_) => SocketEnd::Closed,
        };
        // Boxed: the close handshake's state is not part of every idle session's future.
        let close = Box::pin(closing::finish_socket(&mut ws, ending)).await;
        drop(ws);
        // The socket is closed: free the connection's `max_connections` slot.
        drop(limits);
        // Closes the connection, or suspends a resumable one that dropped.
        state.end_session(&shared, close, end);
    }
}

/// The close someone asked for (DELETE, draining, shutdown), or a resume elsewhere taking
/// the connection over.
fn requested_close(shared: &ConnShared) -> Ending {
    match shared.close_request() {
        Some(close) => Ending::ServerCloses(close.clone()),
        None if superseded(shared) => Ending::Superseded,
        None => Ending::ServerCloses(Close::going_away()),
    }
}

/// Whether a resume on another socket asked this session to let go (never, for a
/// connection that is not resumable).
fn superseded(shared: &ConnShared) -> bool {
    shared.resume.as_ref().is_some_and(|r| r.is_superseded())
}

/// Writes a resumable session's greeting (welcome, then the replay) in one flush; returns
/// how the session ends when the socket fails meanwhile.
async fn greet(
    ws: &mut Ws,
    shared: &ConnShared,
    grace: Duration,
    greeting: Greeting,
) -> Option<Ending> {
    let write = async {
        ws.feed(greeting.welcome).await?;
        for frame in greeting.replay {
            crate::telemetry::metrics::messages_out(1);
            ws.feed(frame).await?;
        }
        ws.flush().await
    };
    bounded(shared, grace, write).await
}
