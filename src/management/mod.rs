//! The management (callback) API for backends, on its own listener: `@connections`
//! (AWS's three calls plus a listing), groups and broadcast (`groups`), and `/healthz`.
//!
//! Paths are parsed by hand (`paths`) because AWS SDKs percent-encode the `@`. Every
//! route but `/healthz` requires credentials (`auth`); errors are AWS-shaped (`error`).

pub mod auth;
pub mod connections;
pub mod error;
pub mod groups;
pub mod health;
pub mod limit;
pub mod paths;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use chrono::{SecondsFormat, TimeZone as _, Utc};
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body_util::{BodyExt as _, Limited};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use crate::cluster::DeliveryError;
use crate::connections::id::request_id;
use crate::state::AppState;
use error::ApiError;
use paths::{PathError, Target};

/// Serves the management API until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    let tls = state.tls.management.clone();
    let deadline = std::time::Duration::from_millis(state.api().client.header_timeout_ms);
    let (tracker, shutdown) = (state.tracker.clone(), state.shutdown.clone());
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        // `[management.tls]`: handshakes run off the accept loop (crate::tls::TlsListener),
        // in tasks the tracker waits for; they stop on shutdown.
        Some(acceptor) => {
            match crate::tls::TlsListener::new(listener, acceptor, deadline, &tracker, &shutdown) {
                Ok(tls) => {
                    use axum::serve::ListenerExt as _;
                    axum::serve(tls.tap_io(|_| {}), service).await
                }
                Err(error) => Err(error),
            }
        }
        None => axum::serve(listener, service).await,
    };
    if let Err(error) = served {
        warn!(%error, "management listener failed");
    }
}

/// The management router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Response {
    let request_id = request_id();
    let api = state.api();
    let target = paths::parse(uri.path(), |s| api.stages.iter().any(|stage| **stage == *s));
    let query = uri.query();
    let no_route = || Err(ApiError::no_route(&method, uri.path()));
    let not_allowed = |allow| Err(ApiError::method_not_allowed(&method, allow));
    let (body, refused) = auth::authorize(
        &state.settings().management,
        api.client.max_message_bytes,
        &method,
        &uri,
        &headers,
        body,
    )
    .await;
    let (route, outcome) = match target {
        Ok(Target::Health) if method == Method::GET => (
            "healthz",
            Ok(axum::Json(serde_json::json!({"status": "ok"})).into_response()),
        ),
        Ok(Target::Ready) if method == Method::GET => ("readyz", Ok(health::ready(&state))),
        _ if limit::throttled(&state, &headers, peer.map(|p| p.0.0.ip())) => (
            "throttled",
            Err(ApiError::limit_exceeded("Too Many Requests")),
        ),
        _ if refused.is_some() => (
            "unauthorized",
            Err(refused.unwrap_or_else(ApiError::forbidden)),
        ),
        Ok(Target::Connection(id)) => (
            "@connections/{id}",
            match method {
                Method::POST => connections::post(&state, id, body).await,
                Method::GET => connections::get(&state, id).await,
                Method::DELETE => connections::delete(&state, id, query).await,
                _ => not_allowed("POST, GET, DELETE"),
            },
        ),
        Ok(Target::Metrics) if method == Method::GET => ("metrics", Ok(health::metrics(&state))),
        Ok(Target::AdminDrain) if method == Method::POST => {
            ("admin/drain", Ok(health::drain(&state)))
        }
        Ok(Target::Connections) if method == Method::GET => {
            ("@connections", connections::list(&state, query).await)
        }
        Ok(Target::GroupMember(group, id)) => (
            "@groups/{group}/members/{id}",
            match method {
                Method::PUT => groups::add(&state, &group, id).await,
                Method::DELETE => groups::remove(&state, &group, id).await,
                _ => not_allowed("PUT, DELETE"),
            },
        ),
        Ok(Target::GroupMembers(group)) if method == Method::GET => (
            "@groups/{group}/members",
            groups::members(&state, &group, query).await,
        ),
        Ok(Target::Group(group)) if method == Method::POST => (
            "@groups/{group}",
            groups::broadcast(&state, Some(&group), body).await,
        ),
        Ok(Target::Broadcast) if method == Method::POST => {
            ("@broadcast", groups::broadcast(&state, None, body).await)
        }
        Ok(target) => ("method", not_allowed(target.methods())),
        Err(PathError::NotFound) => ("unknown", no_route()),
        Err(PathError::InvalidConnectionId(id)) => (
            "invalid",
            Err(ApiError::bad_request(format!("Invalid connectionId: {id}"))),
        ),
        Err(PathError::InvalidGroup(group)) => (
            "invalid",
            Err(ApiError::bad_request(format!(
                "Invalid group name: {group}"
            ))),
        ),
    };
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    if !matches!(route, "healthz" | "readyz" | "metrics") {
        info!(%request_id, %method, route, path = uri.path(), status = response.status().as_u16(), "management call");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

impl From<DeliveryError> for ApiError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::Gone => ApiError::gone(),
            DeliveryError::Full => {
                ApiError::limit_exceeded("The connection's outbound queue is full")
            }
            // Two nodes that cannot understand each other (a rolling upgrade, a bug): not
            // the caller's fault, and a retry may reach a node that does.
            DeliveryError::Unavailable | DeliveryError::Malformed => ApiError::unavailable(),
        }
    }
}

/// Reads a message body (at most `client.max_message_bytes`, else 413) as one frame:
/// text when it is UTF-8, binary otherwise.
async fn read_message(state: &AppState, body: Body) -> Result<Message, ApiError> {
    let limit = state.api().client.max_message_bytes;
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| ApiError::too_large(limit))?
        .to_bytes();
    Ok(match std::str::from_utf8(&bytes) {
        Ok(_) => Message::Text(
            bytes
                .try_into()
                .map_err(|_| ApiError::bad_request("body is not UTF-8"))?,
        ),
        Err(_) => Message::Binary(bytes),
    })
}

/// `?cursor=…&limit=…` of a listing (limit 1–1000, default 100).
struct Listing {
    cursor: Option<String>,
    limit: usize,
}

impl Listing {
    fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut listing = Listing {
            cursor: None,
            limit: 100,
        };
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "cursor" if !value.is_empty() => listing.cursor = Some(value.into_owned()),
                "limit" => {
                    listing.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=1000).contains(l))
                        .ok_or_else(|| ApiError::bad_request("limit must be between 1 and 1000"))?;
                }
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// Epoch milliseconds as ISO-8601 with milliseconds.
fn iso(epoch_ms: i64) -> String {
    Utc.timestamp_millis_opt(epoch_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}
