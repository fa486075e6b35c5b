//! The handshake pipeline, answered asynchronously before the 101:
//! stage path → upgrade checks → throttles → admission (`crate::auth`: origin, authorizer,
//! API key) → `$connect` integration → 101 (+ the one subprotocol
//! `$connect` chose) → registration → session.
//!
//! A plain GET without an upgrade gets 426; a bad key or version gets 400/426; a
//! `$connect` answer outside 2xx rejects with that status; a failed or timed-out backend
//! gives 502/504.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{Instrument as _, info, info_span, warn};

use super::close::Close;
use super::session;
use crate::app::AppState;
use crate::connections::id::request_id;
use crate::connections::{CloseRequest, ConnHandle, ConnInfo, ConnShared, ConnectionId, now_ms};
use crate::integrations::event::EventType;
use crate::integrations::event::{Event, EventDetail};
use crate::integrations::proxy_response::GroupChanges;
use crate::routing::keys;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::metrics;

type Body = Full<Bytes>;

/// Answers one handshake request.
pub async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let response = match accept_or_reject(request, peer, &state).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    };
    metrics::handshake(response.status().as_u16());
    if response.status().is_client_error() {
        metrics::client_error("", keys::CONNECT, "handshake");
    }
    Ok(response)
}

async fn accept_or_reject(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    state: &Arc<AppState>,
) -> Result<Response<Body>, Rejection> {
    let api = state.api();
    let stage = api
        .stage_for_path(request.uri().path())
        .cloned()
        .ok_or_else(|| Rejection::new(StatusCode::NOT_FOUND, "No stage at this path"))?;
    let key = check_upgrade(request.method(), request.headers())?;
    // Throttles first (`[limits]`): the admission holds a `max_connections` slot until
    // the session ends.
    let admission = state.limits.admit(request.headers()).map_err(|refused| {
        info!(%peer, limit = refused.setting(), "connection throttled");
        Rejection::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .with_header(header::RETRY_AFTER, "1")
    })?;
    metrics::connect_attempt(&stage);

    let id = ConnectionId::new(state.node);
    let headers = header_pairs(request.headers());
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut info = ConnInfo {
        id,
        id_text: id.to_string(),
        connected_at_ms: now_ms(),
        source_ip: peer.ip(),
        user_agent: header_str(request.headers(), header::USER_AGENT),
        stage,
        domain_name: header_str(request.headers(), header::HOST).unwrap_or_default(),
        authorizer: None,
    };
    let span = info_span!("connect", conn = %info.id_text, peer = %peer);

    // Origin → authorizer → API key (`[auth]`, crate::auth); skipped when none is configured.
    let mut admitted_subprotocol = None;
    if let Some(auth) = &api.auth {
        let handshake = crate::auth::Handshake {
            headers: request.headers(),
            query: &query,
            info: &info,
            api_id: &api.id,
        };
        let admitted = auth
            .admit(handshake, &span)
            .await
            .map_err(|refused| Rejection::new(refused.status, refused.message))?;
        info.authorizer = admitted.authorizer;
        admitted_subprotocol = admitted.subprotocol;
    }

    let mut subprotocol = None;
    let mut connect_groups = GroupChanges::default();
    let request_id = request_id();
    let connect_log = |status: u16, latency: Option<f64>, error: Option<&str>| {
        if let Some(log) = &state.access_log {
            log.log(&AccessRecord {
                conn: &info,
                api_id: &api.id,
                event_type: EventType::Connect,
                route_key: keys::CONNECT,
                request_id: &request_id,
                message_id: None,
                request_time_ms: info.connected_at_ms,
                status: Some(status),
                integration_latency_ms: latency,
                error,
                disconnect: None,
            });
        }
    };
    let mut connect_latency = None;
    if let Some(route) = api.routes.connect() {
        let started = std::time::Instant::now();
        let event = Event {
            conn: &info,
            api_id: &api.id,
            route_key: keys::CONNECT,
            request_id: &request_id,
            request_time_ms: info.connected_at_ms,
            detail: EventDetail::Connect {
                headers: &headers,
                query: &query,
            },
        };
        let result = route.integration.call(&event, None).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        connect_latency = Some(latency_ms);
        match &result {
            Ok(response) if !route.integration.is_mock() => {
                metrics::integration_answer(
                    &info.stage,
                    keys::CONNECT,
                    response.status,
                    latency_ms,
                );
            }
            Ok(_) => {}
            Err(error) => metrics::execution_error(&info.stage, keys::CONNECT, error.kind()),
        }
        let status = match result {
            Ok(response) if (200..300).contains(&response.status) => {
                subprotocol = response.subprotocol;
                connect_groups = response.groups;
                None
            }
            Ok(response) => Some(response.status),
            Err(error) => {
                warn!(parent: &span, %request_id, %error, "$connect integration failed");
                Some(error.connect_status())
            }
        };
        if let Some(status) = status {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| !s.is_informational() && !s.is_success())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            info!(parent: &span, %request_id, status = status.as_u16(), "connect rejected by $connect");
            connect_log(
                status.as_u16(),
                connect_latency,
                Some("rejected by $connect"),
            );
            return Err(Rejection::empty(status));
        }
    }

    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = subprotocol
        .or(admitted_subprotocol)
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let response = response
        .body(Body::default())
        .map_err(|_| Rejection::empty(StatusCode::INTERNAL_SERVER_ERROR))?;

    connect_log(101, connect_latency, None);
    // Register before the 101 leaves, so a POST made as soon as the client sees it is queued.
    let shared = Arc::new(ConnShared::new(
        info,
        api.client.outbound_queue_messages,
        api.client.outbound_queue_bytes,
    ));
    state
        .cluster
        .local
        .registry
        .insert(ConnHandle::new(shared.clone()));
    if state.shutdown.is_cancelled() {
        // Shutdown began after this handshake did; it closes the connections it found in
        // the registry, and this one may have been inserted after it looked.
        shared.request_close(CloseRequest::going_away());
    }
    state.cluster.connected(&shared);
    metrics::connection_opened();
    state
        .cluster
        .change_groups(&shared.info.id, &connect_groups.join, &connect_groups.leave)
        .await;
    info!(parent: &span, stage = %shared.info.stage, "connected");

    let upgrade = hyper::upgrade::on(&mut request);
    let state = state.clone();
    let session_span = info_span!("conn", conn = %shared.info.id_text);
    state.tracker.clone().spawn(
        async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let ws = match upgraded.downcast::<TokioIo<crate::tls::ClientIo>>() {
                        Ok(parts) if parts.read_buf.is_empty() => {
                            WebSocketStream::from_raw_socket(
                                parts.io.into_inner(),
                                Role::Server,
                                Some(api.ws_config),
                            )
                            .await
                        }
                        Ok(parts) => {
                            WebSocketStream::from_partially_read(
                                parts.io.into_inner(),
                                parts.read_buf.to_vec(),
                                Role::Server,
                                Some(api.ws_config),
                            )
                            .await
                        }
                        Err(_) => {
                            warn!("upgraded connection is not a TCP stream");
                            session::finish(
                                &state,
                                &api,
                                &shared,
                                Close::abnormal("Upgrade failed"),
                            )
                            .await;
                            return;
                        }
                    };
                    session::run(state, api, shared, ws, admission).await;
                }
                Err(error) => {
                    warn!(%error, "upgrade failed");
                    session::finish(&state, &api, &shared, Close::abnormal("Upgrade failed")).await;
                }
            }
        }
        .instrument(session_span),
    );
    Ok(response)
}

/// Checks the upgrade headers; returns the `Sec-WebSocket-Key`.
fn check_upgrade(method: &Method, headers: &HeaderMap) -> Result<String, Rejection> {
    let wants_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    if !wants_websocket {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "This endpoint only accepts WebSocket upgrades",
        )
        .with_header(header::UPGRADE, "websocket"));
    }
    if method != Method::GET {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "A WebSocket upgrade must be a GET",
        ));
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("upgrade"))
        });
    if !connection_upgrade {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "Connection header must contain Upgrade",
        ));
    }
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "Unsupported Sec-WebSocket-Version; use 13",
        )
        .with_header(header::SEC_WEBSOCKET_VERSION, "13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| STANDARD.decode(k.trim()).is_ok_and(|b| b.len() == 16))
        .ok_or_else(|| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be base64 of 16 bytes",
            )
        })?;
    Ok(key.trim().to_owned())
}

/// Handshake headers as `(Name, value)` pairs for the CONNECT event, without `Connection`
/// and `Upgrade` (AWS leaves them out). Names are title-cased (`sec-websocket-key` →
/// `Sec-WebSocket-Key`) because the HTTP parser lowercases them.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| *name != header::CONNECTION && *name != header::UPGRADE)
        .map(|(name, value)| {
            (
                title_case(name.as_str()),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `x-forwarded-for` → `X-Forwarded-For`, with `WebSocket` spelled as browsers send it.
pub fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| match part {
            "websocket" => "WebSocket".to_owned(),
            _ => {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A handshake refused before the 101: a status, a JSON message (or an empty body), and
/// at most one extra header. Every rejection closes the TCP connection.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    message: Option<&'static str>,
    header: Option<(header::HeaderName, &'static str)>,
}

impl Rejection {
    fn new(status: StatusCode, message: &'static str) -> Self {
        Self {
            status,
            message: Some(message),
            header: None,
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            message: None,
            header: None,
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }

    fn into_response(self) -> Response<Body> {
        let body = self.message.map_or_else(Body::default, |message| {
            Body::new(Bytes::from(
                serde_json::json!({ "message": message }).to_string(),
            ))
        });
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if self.message.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some((name, value)) = self.header {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_cases_header_names() {
        assert_eq!(title_case("sec-websocket-key"), "Sec-WebSocket-Key");
        assert_eq!(title_case("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(title_case("host"), "Host");
        assert_eq!(title_case("x--y"), "X--Y");
    }
}
