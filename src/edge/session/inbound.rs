//! The inbound half of a session: what one frame from the client leads to ([`on_frame`]
//! returns the session's next [`Step`]), and the integration call a routed message makes
//! ([`call_route`]).
//!
//! A frame passes, in order: read errors → close codes; binary policy; activity; route
//! selection on the current API (so a reload applies to the next message); message
//! throttles; then the route's integration, or AWS's error frame when none matched.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::{debug, info, warn};

use super::Ending;
use crate::api::Api;
use crate::config::BinaryFrames;
use crate::connections::id::request_id;
use crate::connections::resume::{CONTROL_PREFIX, Control, parse_control};
use crate::connections::{Close, ConnShared, now_ms};
use crate::integrations::event::{Event, keys};
use crate::routing::{Route, Selection};
use crate::state::AppState;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::metrics;
use crate::throttle::{ConnLimits, Verdict};

/// What the session does after a frame.
pub(super) enum Step<'a> {
    /// Nothing to send; read on.
    Read,
    /// Send this frame (an error frame the gateway answers itself), then read on.
    Send(Message),
    /// Call this route's integration with the message.
    Call(&'a Route, Inbound),
    /// The session ends.
    End(Ending),
}

/// A message on its way to an integration.
pub(super) struct Inbound {
    /// The body as received (base64 text for a binary frame).
    body: Bytes,
    /// Whether `body` is base64 of a binary frame.
    is_base64: bool,
    /// `requestContext.requestId`.
    request_id: String,
    /// When it arrived, epoch milliseconds (`requestContext.requestTimeEpoch`).
    received_ms: i64,
}

/// A resumable session's control frame (`{"$sb":…}`, docs/resume.md): an acknowledgement
/// lets the history drop what the client processed; an unknown kind is ignored; a frame
/// that is not JSON closes the connection with 1007.
fn control<'a>(shared: &ConnShared, text: &str) -> Step<'a> {
    match parse_control(text) {
        Control::Ack(offset) => {
            if let Some(resume) = &shared.resume {
                resume.ack(offset);
            }
            Step::Read
        }
        Control::Other => Step::Read,
        Control::Invalid => Step::End(Ending::ServerCloses(Close::new(
            1007,
            "Invalid control frame",
        ))),
    }
}

/// Handles one read from the socket. `api` is the current API (routes), `limits` the
/// connection's throttles, and `last_activity` moves when the frame counts as activity.
pub(super) fn on_frame<'a>(
    frame: Option<Result<Message, WsError>>,
    state: &AppState,
    api: &'a Api,
    shared: &ConnShared,
    limits: &mut ConnLimits,
    last_activity: &mut Instant,
) -> Step<'a> {
    let message = match frame {
        None => {
            return Step::End(Ending::Dropped(Close::abnormal(
                "Connection closed abnormally",
            )));
        }
        Some(Err(error)) => {
            return Step::End(match crate::edge::close::for_error(&error) {
                Ok(close) => Ending::ServerCloses(close),
                Err(dropped) => Ending::Dropped(dropped),
            });
        }
        Some(Ok(message)) => message,
    };
    let (body, is_base64) = match message {
        Message::Text(text) if shared.resume.is_some() && text.starts_with(CONTROL_PREFIX) => {
            return control(shared, &text);
        }
        Message::Text(text) => (text, false),
        Message::Binary(data) => match api.client.binary_frames {
            BinaryFrames::Reject => {
                return Step::End(Ending::ServerCloses(Close::unsupported_binary()));
            }
            BinaryFrames::Base64 => (STANDARD.encode(&data).into(), true),
        },
        Message::Ping(_) | Message::Pong(_) => {
            if api.client.pings_count_as_activity {
                *last_activity = Instant::now();
                shared.touch(now_ms() as u64);
            }
            return Step::Read;
        }
        Message::Close(frame) => return Step::End(Ending::ClientClosed(frame)),
        Message::Frame(_) => return Step::Read,
    };
    *last_activity = Instant::now();
    let received_ms = now_ms();
    shared.touch(received_ms as u64);
    let selection = if is_base64 {
        api.routes.fallback()
    } else {
        api.routes.select(&body, api.client.max_json_depth)
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
            return Step::Send(error_frame(
                "Too Many Requests",
                &shared.info.id_text,
                &request_id,
            ));
        }
        Verdict::Abusive => {
            info!(%request_id, "kept sending while throttled: closing with 1008");
            return Step::End(Ending::ServerCloses(Close::new(1008, "Too many requests")));
        }
    }
    let inbound = Inbound {
        body: Bytes::from(body),
        is_base64,
        request_id,
        received_ms,
    };
    let stage = &shared.info.stage;
    match selection {
        Selection::Route(route) => {
            if let Some(m) = route.metrics(stage) {
                m.message_in();
            }
            Step::Call(route, inbound)
        }
        Selection::NoRoute => {
            metrics::client_error(stage, keys::DEFAULT, "no_route");
            refused(state, api, shared, &inbound, 403, "Forbidden");
            info!(request_id = %inbound.request_id, "no route matched and no $default: Forbidden");
            Step::Send(error_frame(
                "Forbidden",
                &shared.info.id_text,
                &inbound.request_id,
            ))
        }
        Selection::TooDeep => {
            metrics::client_error(stage, keys::DEFAULT, "too_deep");
            refused(state, api, shared, &inbound, 400, "Bad request body");
            info!(request_id = %inbound.request_id, "message nests too deeply: Bad request body");
            Step::Send(Message::text(format!(
                r#"{{"message" : "Bad request body", "connectionId": "{}", "messageId": "{}"}}"#,
                shared.info.id_text,
                crate::connections::id::request_id()
            )))
        }
    }
}

/// Calls a route's integration for one message; returns the frame to send back, if any.
pub(super) async fn call_route(
    state: &AppState,
    api: &Api,
    shared: &ConnShared,
    route: &Route,
    message: Inbound,
) -> Option<Message> {
    let started = std::time::Instant::now();
    let message_id = request_id();
    let text = std::str::from_utf8(&message.body).unwrap_or_default();
    let event = Event::message(
        &shared.info,
        &api.id,
        &route.key,
        &message.request_id,
        message.received_ms,
        &message_id,
        text,
        message.is_base64,
    );
    let result = route.integration.call(&event, Some(&message.body)).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let log = |status: u16, error: Option<&str>| {
        if let Some(access_log) = &state.access_log {
            access_log.log(&AccessRecord {
                status: Some(status),
                integration_latency_ms: Some(latency_ms),
                error,
                ..AccessRecord::of(&event)
            });
        }
    };
    let request_id = &message.request_id;
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
                request_id,
            ))
        }
    }
}

/// Access-logs a message refused before any integration ran.
fn refused(
    state: &AppState,
    api: &Api,
    shared: &ConnShared,
    message: &Inbound,
    status: u16,
    error: &str,
) {
    if let Some(access_log) = &state.access_log {
        let message_id = request_id();
        let text = std::str::from_utf8(&message.body).unwrap_or_default();
        let event = Event::message(
            &shared.info,
            &api.id,
            keys::DEFAULT,
            &message.request_id,
            message.received_ms,
            &message_id,
            text,
            message.is_base64,
        );
        access_log.log(&AccessRecord {
            status: Some(status),
            error: Some(error),
            ..AccessRecord::of(&event)
        });
    }
}

/// AWS's error frame: `{"message": "Forbidden", "connectionId":"…", "requestId":"…"}`.
fn error_frame(message: &str, connection_id: &str, request_id: &str) -> Message {
    Message::text(format!(
        r#"{{"message": "{message}", "connectionId":"{connection_id}", "requestId":"{request_id}"}}"#
    ))
}
