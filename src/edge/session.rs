//! The session: one task per connection that owns the socket.
//!
//! It `select!`s over its bounded outbound queue — whose wake-up also carries close requests
//! (DELETE, draining, shutdown) — finished integration calls, inbound frames and one timer
//! (idle, lifetime, ping).
//! Integration calls run in their own tasks so a slow backend never blocks the read loop;
//! at `max_inflight_per_connection` the session stops reading until one finishes, and TCP
//! pushes back on the client. Cleanup — deregistration and `$disconnect` — runs in one
//! place, [`finish`], after the loop.
//!
//! Activity (for the idle timer and `lastActiveAt`): data frames in either direction, and
//! pings/pongs from the client only when `pings_count_as_activity` is set.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, warn};

use super::close::Close;
use crate::api::Api;
use crate::app::AppState;
use crate::config::BinaryFrames;
use crate::connections::ConnShared;
use crate::connections::id::request_id;
use crate::connections::now_ms;
use crate::integrations::event::EventType;
use crate::integrations::event::{Event, EventDetail};
use crate::routing::{Route, Selection, keys};
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::metrics;
use crate::throttle::{ConnLimits, Verdict};

/// How long the gateway waits for the client's answer to its close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;

type Ws = WebSocketStream<crate::tls::ClientIo>;

/// Why the loop ended.
enum Ending {
    /// The client sent a close frame (its code and reason, if any).
    ClientClosed(Option<CloseFrame>),
    /// The gateway closes with this code: send it, wait for the reply.
    ServerCloses(Close),
    /// The socket is unusable; nothing can be sent.
    Dropped(Close),
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
) -> impl Future<Output = ()> + Send {
    let (mut ws, mut limits) = (ws, limits);
    async move {
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
        let write_grace = Duration::from_millis(api.client.slow_consumer_grace_ms);
        // At `limits.max_inflight_per_node` a call waits here and reading pauses, as at the
        // per-connection cap.
        let mut calls = limits.limits().call_gate();

        let ending = loop {
            tokio::select! {
                biased;
                _ = shared.outbox.ready() => {
                    if shared.close_request().is_some() {
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
                    let message = match frame {
                        None => break Ending::Dropped(Close::abnormal("Connection closed abnormally")),
                        Some(Err(error)) => match Close::for_error(&error) {
                            Ok(close) => break Ending::ServerCloses(close),
                            Err(dropped) => break Ending::Dropped(dropped),
                        },
                        Some(Ok(message)) => message,
                    };
                    let (body, is_base64) = match message {
                        Message::Text(text) => (text, false),
                        Message::Binary(data) => match api.client.binary_frames {
                            BinaryFrames::Reject => break Ending::ServerCloses(Close::unsupported_binary()),
                            BinaryFrames::Base64 => (STANDARD.encode(&data).into(), true),
                        },
                        Message::Ping(_) | Message::Pong(_) => {
                            if api.client.pings_count_as_activity {
                                last_activity = Instant::now();
                                shared.touch(now_ms() as u64);
                            }
                            continue;
                        }
                        Message::Close(frame) => break Ending::ClientClosed(frame),
                        Message::Frame(_) => continue,
                    };
                    last_activity = Instant::now();
                    let received_ms = now_ms();
                    shared.touch(received_ms as u64);
                    // Routes come from the current API, so a reload applies to the next message.
                    let current = state.api();
                    let selection = if is_base64 {
                        current.routes.fallback()
                    } else {
                        current.routes.select(&body, api.client.max_json_depth)
                    };
                    let request_id = request_id();
                    let route_key = match &selection {
                        Selection::Route(route) => Some(&*route.key),
                        _ => None,
                    };
                    match limits.check_message(route_key) {
                        Verdict::Pass => {}
                        Verdict::Throttled => {
                            debug!(%request_id, "throttled: Too Many Requests");
                            let frame = error_frame("Too Many Requests", &shared.info.id_text, &request_id);
                            if let Some(end) = bounded(&shared, write_grace, ws.send(frame)).await {
                                break end;
                            }
                            continue;
                        }
                        Verdict::Abusive => {
                            info!(%request_id, "kept sending while throttled: closing with 1008");
                            break Ending::ServerCloses(Close::new(1008, "Too many requests"));
                        }
                    }
                    let stage = &shared.info.stage;
                    match selection {
                        Selection::Route(route) => {
                            if let Some(m) = route.metrics(stage) {
                                m.message_in();
                            }
                            let message = Inbound { body: Bytes::from(body), is_base64, request_id, received_ms };
                            if route.integration.is_mock() {
                                // A mock does no I/O: answer inline, without a task or a call slot,
                                // and with borrowed state (no shared reference counts touched).
                                // Boxed, so its state is not part of every idle session's future.
                                let call = call_route(&state, &current, &shared, route, message);
                                if let Some(reply) = Box::pin(call).await
                                    && let Some(end) = bounded(&shared, write_grace, ws.send(reply)).await
                                {
                                    break end;
                                }
                            } else {
                                let (state, api, shared, route) = (state.clone(), current.clone(), shared.clone(), route.clone());
                                let call = async move { call_route(&state, &api, &shared, &route, message).await };
                                calls.start(&mut inflight, call.in_current_span());
                            }
                        }
                        Selection::NoRoute => {
                            metrics::client_error(stage, keys::DEFAULT, "no_route");
                            log_refused(&state, &current, &shared, &request_id, 403, "Forbidden");
                            info!(%request_id, "no route matched and no $default: Forbidden");
                            let frame = error_frame("Forbidden", &shared.info.id_text, &request_id);
                            if let Some(end) = bounded(&shared, write_grace, ws.send(frame)).await {
                                break end;
                            }
                        }
                        Selection::TooDeep => {
                            metrics::client_error(stage, keys::DEFAULT, "too_deep");
                            log_refused(&state, &current, &shared, &request_id, 400, "Bad request body");
                            info!(%request_id, "message nests too deeply: Bad request body");
                            let frame = format!(
                                r#"{{"message" : "Bad request body", "connectionId": "{}", "messageId": "{}"}}"#,
                                shared.info.id_text,
                                crate::connections::id::request_id()
                            );
                            if let Some(end) = bounded(&shared, write_grace, ws.send(Message::text(frame))).await {
                                break end;
                            }
                        }
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
        };

        // Calls still in flight finish on their own; their answers have nowhere to go.
        inflight.detach_all();
        let close = match ending {
            Ending::ClientClosed(frame) => {
                // tungstenite queued the echo of the client's close; push it out.
                let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, ws.flush()).await;
                match frame {
                    Some(f) => Close::new(u16::from(f.code), f.reason.as_str()),
                    None => Close::no_status(),
                }
            }
            Ending::ServerCloses(close) => {
                let frame = CloseFrame {
                    code: CloseCode::from(close.code),
                    reason: close.reason.clone().into(),
                };
                let goodbye = async {
                    ws.send(Message::Close(Some(frame))).await?;
                    // Wait for the client's close reply (or anything else ending the stream).
                    while let Some(Ok(_)) = ws.next().await {}
                    Ok::<_, tokio_tungstenite::tungstenite::Error>(())
                };
                let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, goodbye).await;
                close
            }
            Ending::Dropped(close) => close,
        };
        drop(ws);
        // The socket is closed: free the connection's `max_connections` slot.
        drop(limits);
        finish(&state, &state.api(), &shared, close).await;
    }
}

/// The close someone asked for (DELETE, draining, shutdown).
fn requested_close(shared: &ConnShared) -> Ending {
    Ending::ServerCloses(
        shared
            .close_request()
            .map_or_else(Close::going_away, |r| Close::new(r.code, r.reason.clone())),
    )
}

/// Runs one write to the socket, bounded: a DELETE or shutdown interrupts it, and a client
/// that reads too slowly for it to finish within `grace` is closed with 1013. Returns how
/// the session ends, or `None` when the write went through.
async fn bounded(
    shared: &ConnShared,
    grace: Duration,
    write: impl Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
) -> Option<Ending> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once (the socket has room): then no grace timer is armed
    // and no close wait registered — a timer per write is measurable on the hot path.
    match futures_util::FutureExt::now_or_never(write.as_mut()) {
        Some(Ok(())) => return None,
        Some(Err(error)) => return write_failed(error),
        None => {}
    }
    // The rest is the rare slow path, boxed: its waits would otherwise add ~500 bytes to
    // every idle session's future (its largest state is a pending write).
    Box::pin(slow_write(shared, grace, write)).await
}

/// The session's end when a write failed: the socket is unusable.
fn write_failed(error: tokio_tungstenite::tungstenite::Error) -> Option<Ending> {
    debug!(%error, "write failed");
    Some(Ending::Dropped(Close::abnormal(
        "Connection closed abnormally",
    )))
}

/// A write that could not complete at once: wait for it, a close request or the grace
/// period, whichever comes first.
async fn slow_write(
    shared: &ConnShared,
    grace: Duration,
    write: std::pin::Pin<
        &mut impl Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
    >,
) -> Option<Ending> {
    let close_requested = async {
        loop {
            shared.outbox.ready().await;
            if shared.close_request().is_some() {
                break;
            }
        }
    };
    let end = tokio::select! {
        biased;
        _ = close_requested => Some(requested_close(shared)),
        result = tokio::time::timeout(grace, write) => match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => write_failed(error),
            Err(_) => {
                info!(grace_ms = grace.as_millis() as u64, "slow consumer: closing");
                metrics::dropped("slow_consumer", 1);
                Some(Ending::ServerCloses(Close::new(1013, "Slow consumer")))
            }
        },
    };
    // The wait above may have taken a wake-up meant for a frame queued meanwhile: hand it
    // back to the session loop (a spurious wake-up costs it one empty check).
    shared.outbox.wake();
    end
}

/// Writes `first` and up to a batch of further queued frames, then flushes once. Activity
/// is recorded before the frames leave, so whoever sees a frame also sees it; more than a
/// batch wakes the session again.
async fn write_queued(
    ws: &mut Ws,
    shared: &ConnShared,
    first: (Message, bool),
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    shared.touch(now_ms() as u64);
    let (mut message, mut more) = first;
    let mut frames = 1;
    loop {
        ws.feed(message).await?;
        if !more {
            break;
        }
        if frames == WRITE_BATCH {
            shared.outbox.wake();
            break;
        }
        // Only the session pops, so a frame is there.
        let Some(next) = shared.outbox.pop() else {
            break;
        };
        (message, more) = next;
        frames += 1;
    }
    metrics::messages_out(frames as u64);
    ws.flush().await
}

/// A message on its way to an integration.
struct Inbound {
    /// The body as received (base64 text for a binary frame).
    body: Bytes,
    /// Whether `body` is base64 of a binary frame.
    is_base64: bool,
    /// `requestContext.requestId`.
    request_id: String,
    /// When it arrived, epoch milliseconds (`requestContext.requestTimeEpoch`).
    received_ms: i64,
}

/// Calls a route's integration for one message; returns the frame to send back, if any.
async fn call_route(
    state: &AppState,
    api: &Api,
    shared: &ConnShared,
    route: &Route,
    message: Inbound,
) -> Option<Message> {
    let Inbound {
        body,
        is_base64,
        request_id,
        received_ms: request_time_ms,
    } = message;
    let started = std::time::Instant::now();
    let message_id = crate::connections::id::request_id();
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let event = Event {
        conn: &shared.info,
        api_id: &api.id,
        route_key: &route.key,
        request_id: &request_id,
        request_time_ms,
        detail: EventDetail::Message {
            message_id: &message_id,
            body: text,
            is_base64,
        },
    };
    let result = route.integration.call(&event, Some(&body)).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let log = |status: u16, error: Option<&str>| {
        if let Some(access_log) = &state.access_log {
            access_log.log(&AccessRecord {
                conn: &shared.info,
                api_id: &api.id,
                event_type: EventType::Message,
                route_key: &route.key,
                request_id: &request_id,
                message_id: Some(&message_id),
                request_time_ms,
                status: Some(status),
                integration_latency_ms: Some(latency_ms),
                error,
                disconnect: None,
            });
        }
    };
    match result {
        Ok(response) => {
            log(response.status, None);
            info!(%request_id, route = %route.key, status = response.status, latency_ms, "message");
            if !route.integration.is_mock()
                && let Some(m) = route.metrics(&shared.info.stage)
            {
                m.integration_answer(response.status, latency_ms);
            }
            if !response.groups.is_empty() {
                let groups = &response.groups;
                state
                    .cluster
                    .change_groups(&shared.info.id, &groups.join, &groups.leave)
                    .await;
            }
            if !route.two_way {
                return None;
            }
            let body = response.body?;
            if response.binary {
                return Some(Message::Binary(body));
            }
            Some(match Utf8Bytes::try_from(body.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(body),
            })
        }
        Err(error) => {
            warn!(%request_id, route = %route.key, %error, latency_ms, "message: integration failed");
            metrics::execution_error(&shared.info.stage, &route.key, error.kind());
            log(500, Some(&error.to_string()));
            Some(error_frame(
                "Internal server error",
                &shared.info.id_text,
                &request_id,
            ))
        }
    }
}

/// Access-logs a message refused before any integration ran.
fn log_refused(
    state: &AppState,
    api: &Api,
    shared: &ConnShared,
    request_id: &str,
    status: u16,
    error: &str,
) {
    if let Some(access_log) = &state.access_log {
        access_log.log(&AccessRecord {
            conn: &shared.info,
            api_id: &api.id,
            event_type: EventType::Message,
            route_key: keys::DEFAULT,
            request_id,
            message_id: None,
            request_time_ms: now_ms(),
            status: Some(status),
            integration_latency_ms: None,
            error: Some(error),
            disconnect: None,
        });
    }
}

/// AWS's error frame: `{"message": "Forbidden", "connectionId":"…", "requestId":"…"}`.
fn error_frame(message: &str, connection_id: &str, request_id: &str) -> Message {
    Message::text(format!(
        r#"{{"message": "{message}", "connectionId":"{connection_id}", "requestId":"{request_id}"}}"#
    ))
}

/// Deregisters the connection and runs `$disconnect`.
pub async fn finish(state: &Arc<AppState>, api: &Arc<Api>, shared: &Arc<ConnShared>, close: Close) {
    shared.outbox.close();
    state.cluster.disconnected(shared);
    metrics::connection_closed(close.code);
    info!(code = close.code, reason = %close.reason, "disconnected");
    if let Some(access_log) = &state.access_log {
        let request_id = request_id();
        access_log.log(&AccessRecord {
            conn: &shared.info,
            api_id: &api.id,
            event_type: EventType::Disconnect,
            route_key: keys::DISCONNECT,
            request_id: &request_id,
            message_id: None,
            request_time_ms: now_ms(),
            status: None,
            integration_latency_ms: None,
            error: None,
            disconnect: Some((close.code, &close.reason)),
        });
    }
    fire_disconnect(&state.tracker, api, shared.clone(), close);
}

/// Calls the `$disconnect` integration, if any, in the background (best effort; tracked,
/// so shutdown waits for it).
pub fn fire_disconnect(
    tracker: &TaskTracker,
    api: &Arc<Api>,
    shared: Arc<ConnShared>,
    close: Close,
) {
    let Some(route) = api.routes.disconnect().cloned() else {
        return;
    };
    let api = api.clone();
    tracker.spawn(
        async move {
            let request_id = request_id();
            let event = Event {
                conn: &shared.info,
                api_id: &api.id,
                route_key: keys::DISCONNECT,
                request_id: &request_id,
                request_time_ms: now_ms(),
                detail: EventDetail::Disconnect {
                    code: close.code,
                    reason: &close.reason,
                },
            };
            if let Err(error) = route.integration.call(&event, None).await {
                warn!(%request_id, %error, "$disconnect integration failed");
            }
        }
        .in_current_span(),
    );
}
