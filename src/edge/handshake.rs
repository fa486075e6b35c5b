//! The handshake pipeline, answered asynchronously before the 101:
//! stage path → upgrade checks → throttles → the headers AWS adds and the client's address
//! (`forwarded`) → admission (`crate::auth`: origin, authorizer, API key) → `$connect`
//! integration → 101 (+ the one subprotocol `$connect` chose) → registration → session.
//!
//! A client offering `switchboard.resume.v1` (with `[resume]` enabled) gets a resumable
//! session ([`super::resume`]): a resume attaches the new socket to the suspended
//! connection after the authorizer and `$connect` (`requestContext.resumed: true`) pass;
//! a resume that cannot be served opens a fresh connection whose welcome says why.
//!
//! A plain GET without an upgrade gets 426; a bad key or version gets 400/426; a
//! `$connect` answer outside 2xx rejects with that status; a failed or timed-out backend
//! gives 502/504.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

use super::forwarded::{self, Transport};
use super::fragments::FragmentGuard;
use super::{resume, session};
use crate::api::Api;
use crate::connections::id::request_id;
use crate::connections::resume::Refusal;
use crate::connections::{Close, ConnInfo, ConnShared, ConnectionId, TraceId, now_ms};
use crate::integrations::event::{Event, header_pairs, keys};
use crate::integrations::proxy_response::GroupChanges;
use crate::state::AppState;
use crate::state::connection::Accepted;
use crate::state::resume::SocketEnd;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::metrics;
use crate::throttle::ConnLimits;

type Body = Full<Bytes>;

/// Answers one handshake request.
pub async fn handle(
    request: Request<Incoming>,
    transport: Transport,
    state: Arc<AppState>,
) -> Result<Response<Body>, Infallible> {
    let response = match accept_or_reject(request, transport, &state).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    };
    metrics::handshake(response.status().as_u16());
    if response.status().is_client_error() {
        metrics::client_error("", keys::CONNECT, "handshake");
    }
    Ok(response)
}

/// The pipeline: admission → authorizer → `$connect` → register → spawn. Each stage
/// either hands the next what it established or refuses the handshake.
async fn accept_or_reject(
    mut request: Request<Incoming>,
    transport: Transport,
    state: &Arc<AppState>,
) -> Result<Response<Body>, Rejection> {
    let peer = transport.peer;
    let api = state.api();
    let Admitted { stage, key, permit } = admit(&request, peer, &api, state)?;
    let mut query = query_pairs(request.uri());
    // A client asking for a resumable session (docs/resume.md); its resume parameters are
    // the gateway's, not the backend's, and leave the query here.
    let resume = (api.resume.enabled && offers_resume(request.headers()))
        .then(|| resume::Ask::take(&mut query));
    let resuming = match &resume {
        Some(ask) => ask.find(state).await,
        None => Ok(None),
    };
    let (resuming, refusal) = match resuming {
        Ok(found) => (found, None),
        Err(Refusal::Busy) => {
            // Cluster mode: the session's node may still be alive; try again shortly.
            metrics::resume_attempt(Refusal::Busy.as_str());
            return Err(Rejection::new(
                StatusCode::CONFLICT,
                "The session could not be resumed; connect again",
            )
            .with_header(header::RETRY_AFTER, "1"));
        }
        Err(refusal) => (None, Some(refusal)),
    };
    // What AWS adds (X-Forwarded-*, X-Amzn-Trace-Id) and the client's real address, once,
    // for the authorizer event and the CONNECT event alike.
    let connected_at_ms = now_ms();
    let forwarded = forwarded::forwarded(
        request.headers(),
        transport,
        &api.client.trusted_proxies,
        (connected_at_ms / 1000) as u64,
        rand::random(),
    );
    let headers = forwarded.present(request.headers());
    let domain_name = if api.client.public_host.is_empty() {
        header_str(request.headers(), header::HOST).unwrap_or_default()
    } else {
        api.client.public_host.clone()
    };
    let mut info = ConnInfo {
        id: ConnectionId::new(state.node()),
        id_text: String::new(),
        connected_at_ms,
        source_ip: forwarded.source_ip,
        user_agent: header_str(request.headers(), header::USER_AGENT),
        stage,
        domain_name,
        authorizer: None,
        trace_id: client_trace_id(request.headers()).unwrap_or_else(TraceId::random),
    };
    info.id_text = info.id.to_string();
    if let Some(found) = resuming {
        let handshake = (&headers, query.as_slice(), key.as_str(), peer);
        return resume_session(state, api, &mut request, handshake, permit, found).await;
    }
    let span = info_span!("connect", conn = %info.id_text, peer = %peer, trace_id = %info.trace_id);

    let identity = authorize(&api, &headers, &query, &info, &span).await?;
    info.authorizer = identity.authorizer;

    let request_id = request_id();
    let resumable = resume.is_some();
    let connected = run_connect(
        state,
        &api,
        (&headers, &query),
        &info,
        &request_id,
        resumable.then_some(false),
        &span,
    )
    .await?;
    let subprotocol = if resumable {
        // The one subprotocol a resumable session speaks (a `$connect` choice yields).
        Some(resume::SUBPROTOCOL.to_owned())
    } else {
        connected.subprotocol.or(identity.subprotocol)
    };
    let response = switching_protocols(&key, subprotocol.as_deref())?;

    let accepted = Accepted {
        request_id: &request_id,
        connect_latency_ms: connected.latency_ms,
    };
    let opened = Unclaimed {
        state,
        shared: state.open_connection(&api, info, accepted, resumable),
        claimed: false,
        end: SocketEnd::Closed,
    };
    let groups = &connected.groups;
    state
        .cluster
        .change_groups(&opened.shared.info.id, &groups.join, &groups.leave)
        .await;
    info!(parent: &span, stage = %opened.shared.info.stage, "connected");

    let shared = opened.claim();
    if let Some(refusal) = refusal {
        metrics::resume_attempt(refusal.as_str());
    }
    let greeting =
        resumable.then(|| resume::greeting(&shared, &api, false, 0, refusal, Vec::new()));
    spawn_session(
        state,
        api,
        shared,
        hyper::upgrade::on(&mut request),
        permit,
        greeting,
    );
    Ok(response)
}

/// The handshake of a resume (docs/resume.md): the authorizer and `$connect`
/// (`requestContext.resumed: true`) run again for the connection, which keeps what its
/// first handshake established (id, identity); then the new socket takes the session over
/// and its session starts with the welcome and the frames after the client's offset.
async fn resume_session(
    state: &Arc<AppState>,
    api: Arc<Api>,
    request: &mut Request<Incoming>,
    (headers, query, key, peer): (&HeaderMap, &[(String, String)], &str, SocketAddr),
    permit: ConnLimits,
    (shared, offset): (Arc<ConnShared>, u64),
) -> Result<Response<Body>, Rejection> {
    let span = info_span!("resume", conn = %shared.info.id_text, peer = %peer, trace_id = %shared.info.trace_id);
    authorize(&api, headers, query, &shared.info, &span).await?;
    let request_id = request_id();
    let connected = run_connect(
        state,
        &api,
        (headers, query),
        &shared.info,
        &request_id,
        Some(true),
        &span,
    )
    .await?;
    let response = switching_protocols(key, Some(resume::SUBPROTOCOL))?;
    let limit = Duration::from_millis(api.client.slow_consumer_grace_ms) + resume::TAKEOVER_SLACK;
    let replay = state
        .resume_connection(&shared, offset, limit)
        .instrument(span.clone())
        .await
        .map_err(|refusal| {
            // A race lost (the window ended, or another resume attached, meanwhile).
            metrics::resume_attempt(refusal.as_str());
            Rejection::new(
                StatusCode::CONFLICT,
                "The session could not be resumed; connect again",
            )
        })?;
    metrics::resume_attempt("resumed");
    // Suspended again if the handshake is abandoned before its session takes it.
    let opened = Unclaimed {
        state,
        shared,
        claimed: false,
        end: SocketEnd::Dropped,
    };
    let groups = &connected.groups;
    state
        .cluster
        .change_groups(&opened.shared.info.id, &groups.join, &groups.leave)
        .await;
    info!(parent: &span, offset, replayed = replay.len(), "resumed");
    let shared = opened.claim();
    let greeting = resume::greeting(&shared, &api, true, offset, None, replay);
    spawn_session(
        state,
        api,
        shared,
        hyper::upgrade::on(request),
        permit,
        Some(greeting),
    );
    Ok(response)
}

/// A connection the handshake opened that no session has taken yet. If the handshake is
/// dropped before the session takes it (its deadline, shutdown, or the client hanging up
/// while `$connect`'s groups are joined), dropping this closes the connection, so it is
/// deregistered and its `$disconnect` fires, as for any other close.
struct Unclaimed<'a> {
    state: &'a Arc<AppState>,
    shared: Arc<ConnShared>,
    claimed: bool,
    /// How the connection ends if no session takes it: closed, or (a resume) suspended
    /// again.
    end: SocketEnd,
}

impl Unclaimed<'_> {
    /// Hands the connection to its session.
    fn claim(mut self) -> Arc<ConnShared> {
        self.claimed = true;
        self.shared.clone()
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if !self.claimed {
            self.state.end_session(
                &self.shared,
                Close::abnormal("Handshake abandoned"),
                self.end,
            );
        }
    }
}

/// What admission established: the stage, the `Sec-WebSocket-Key`, and the throttles'
/// permit (it holds a `max_connections` slot until the session ends).
struct Admitted {
    stage: Arc<str>,
    key: String,
    permit: ConnLimits,
}

/// Stage 1, admission: the stage path, the upgrade headers, draining (503), then the
/// throttles.
fn admit(
    request: &Request<Incoming>,
    peer: SocketAddr,
    api: &Api,
    state: &AppState,
) -> Result<Admitted, Rejection> {
    let stage = api
        .stage_for_path(request.uri().path())
        .cloned()
        .ok_or_else(|| Rejection::new(StatusCode::NOT_FOUND, "No stage at this path"))?;
    let key = check_upgrade(request.method(), request.headers())?;
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // The listener is closing; a handshake that got in meanwhile goes elsewhere.
        return Err(Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "Draining")
            .with_header(header::RETRY_AFTER, "1"));
    }
    let permit = state.limits.admit(request.headers()).map_err(|refused| {
        info!(%peer, limit = refused.setting(), "connection throttled");
        Rejection::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .with_header(header::RETRY_AFTER, "1")
    })?;
    metrics::connect_attempt(&stage);
    Ok(Admitted { stage, key, permit })
}

/// Stage 2, the authorizer (`[auth]`, crate::auth: origin → authorizer → API key); a pass
/// with nothing configured.
async fn authorize(
    api: &Api,
    headers: &HeaderMap,
    query: &[(String, String)],
    info: &ConnInfo,
    span: &tracing::Span,
) -> Result<crate::auth::Admission, Rejection> {
    let Some(auth) = &api.auth else {
        return Ok(crate::auth::Admission::default());
    };
    let handshake = crate::auth::Handshake {
        headers,
        query,
        info,
        api_id: &api.id,
    };
    auth.admit(handshake, span)
        .await
        .map_err(|refused| Rejection::new(refused.status, refused.message))
}

/// What an accepting `$connect` said (or nothing, without a `$connect` route).
#[derive(Default)]
struct Connected {
    /// The subprotocol it chose.
    subprotocol: Option<String>,
    /// Groups it joined or left for the connection.
    groups: GroupChanges,
    /// How long it took.
    latency_ms: Option<f64>,
}

/// Stage 3, the `$connect` integration: a 2xx accepts; another status refuses with that
/// status, a failed or timed-out call with 502/504. A refusal is access-logged here (an
/// accepted connection is logged when it opens).
async fn run_connect(
    state: &AppState,
    api: &Api,
    (headers, query): (&HeaderMap, &[(String, String)]),
    info: &ConnInfo,
    request_id: &str,
    resumed: Option<bool>,
    span: &tracing::Span,
) -> Result<Connected, Rejection> {
    let Some(route) = api.routes.connect() else {
        return Ok(Connected::default());
    };
    let headers = header_pairs(headers, &[header::CONNECTION, header::UPGRADE]);
    let mut event = Event::connect(info, &api.id, request_id, &headers, query);
    if let Some(resumed) = resumed {
        event = event.resumable(resumed);
    }
    let started = std::time::Instant::now();
    let result = route.integration.call(&event, None).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let refused = match result {
        Ok(response) => {
            if !route.integration.is_mock() {
                metrics::integration_answer(
                    &info.stage,
                    keys::CONNECT,
                    response.status,
                    latency_ms,
                );
            }
            if (200..300).contains(&response.status) {
                return Ok(Connected {
                    subprotocol: response.subprotocol,
                    groups: response.groups,
                    latency_ms: Some(latency_ms),
                });
            }
            response.status
        }
        Err(error) => {
            metrics::execution_error(&info.stage, keys::CONNECT, error.kind());
            warn!(parent: span, %request_id, %error, "$connect integration failed");
            error.connect_status()
        }
    };
    let status = StatusCode::from_u16(refused)
        .ok()
        .filter(|s| !s.is_informational() && !s.is_success())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    info!(parent: span, %request_id, status = status.as_u16(), "connect rejected by $connect");
    if let Some(log) = &state.access_log {
        log.log(&AccessRecord {
            status: Some(status.as_u16()),
            integration_latency_ms: Some(latency_ms),
            error: Some("rejected by $connect"),
            ..AccessRecord::of(&event)
        });
    }
    Err(Rejection::empty(status))
}

/// The 101, selecting `subprotocol` when one was chosen.
fn switching_protocols(key: &str, subprotocol: Option<&str>) -> Result<Response<Body>, Rejection> {
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
        .body(Body::default())
        .map_err(|_| Rejection::empty(StatusCode::INTERNAL_SERVER_ERROR))
}

/// Stage 5: once hyper hands over the upgraded socket, the session runs it (tracked, in
/// the connection's span). An upgrade that fails closes the registered connection.
fn spawn_session(
    state: &Arc<AppState>,
    api: Arc<Api>,
    shared: Arc<ConnShared>,
    upgrade: hyper::upgrade::OnUpgrade,
    permit: ConnLimits,
    greeting: Option<Box<session::Greeting>>,
) {
    let session_span = info_span!(
        "conn",
        conn = %shared.info.id_text,
        trace_id = %shared.info.trace_id
    );
    let state = state.clone();
    state.tracker.clone().spawn(
        async move {
            let io = match upgrade.await {
                Ok(upgraded) => upgraded.downcast::<TokioIo<crate::tls::ClientIo>>().ok(),
                Err(error) => {
                    warn!(%error, "upgrade failed");
                    None
                }
            };
            // `parts` (hyper's read buffer with it) is dropped before the session runs: held
            // across it, the buffer would stay allocated for the connection's whole life.
            let ws = {
                let Some(parts) = io else {
                    // A resumed connection is suspended again; a new one closes.
                    let end = if greeting.as_ref().is_some_and(|g| g.resumed) {
                        SocketEnd::Dropped
                    } else {
                        SocketEnd::Closed
                    };
                    state.end_session(&shared, Close::abnormal("Upgrade failed"), end);
                    return;
                };
                let mut io =
                    FragmentGuard::new(parts.io.into_inner(), api.client.max_fragments_per_message);
                // Bytes the handshake read past its end are frames too: count them first.
                let read_ahead = &parts.read_buf[..io.feed_read_ahead(&parts.read_buf)];
                // Without bytes read past the handshake, no buffer is copied (most clients).
                if read_ahead.is_empty() {
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(api.ws_config)).await
                } else {
                    WebSocketStream::from_partially_read(
                        io,
                        read_ahead.to_vec(),
                        Role::Server,
                        Some(api.ws_config),
                    )
                    .await
                }
            };
            session::run(state, api, shared, ws, permit, greeting).await;
        }
        .instrument(session_span),
    );
}

/// Query parameters, percent-decoded, in order.
fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
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

/// Whether the handshake offers the resume subprotocol (`Sec-WebSocket-Protocol`, any of
/// its comma-separated values on any of its lines).
fn offers_resume(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == resume::SUBPROTOCOL))
}

/// The trace id of the handshake's `traceparent`, when it has exactly one valid one.
fn client_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let mut values = headers.get_all("traceparent").iter();
    match (values.next(), values.next()) {
        (Some(value), None) => TraceId::from_traceparent(value.to_str().ok()?),
        _ => None,
    }
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
