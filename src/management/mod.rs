//! The management (callback) API for backends, on its own listener:
//! `POST|GET|DELETE [/{stage}]/@connections/{id}` and `GET /healthz`.
//!
//! Paths are parsed by hand (`paths`) because AWS SDKs percent-encode the `@`. Every
//! route but `/healthz` requires credentials (`auth`); errors are AWS-shaped (`error`).

pub mod auth;
pub mod connections;
pub mod error;
pub mod paths;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::app::AppState;
use crate::connections::id::request_id;
use error::ApiError;
use paths::{PathError, Target};

/// Serves the management API until the process ends.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    if let Err(error) = axum::serve(listener, router(state)).await {
        warn!(%error, "management listener failed");
    }
}

/// The management router (also used directly by tests with `oneshot`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = request_id();
    let api = state.api.clone();
    let target = paths::parse(uri.path(), |s| api.stages.iter().any(|stage| **stage == *s));
    let (route, outcome) = match target {
        Ok(Target::Health) if method == Method::GET => (
            "healthz",
            Ok(axum::Json(serde_json::json!({"status": "ok"})).into_response()),
        ),
        _ if !auth::is_authorized(&state.management, &headers) => {
            ("unauthorized", Err(ApiError::forbidden()))
        }
        Ok(Target::Connection(id)) => {
            let result = match method {
                Method::POST => connections::post(&state, id, body).await,
                Method::GET => connections::get(&state, id),
                Method::DELETE => connections::delete(&state, id, uri.query()),
                _ => Err(ApiError::no_route(&method, uri.path())),
            };
            ("@connections", result)
        }
        Ok(Target::Health) => ("healthz", Err(ApiError::no_route(&method, uri.path()))),
        Err(PathError::InvalidConnectionId(id)) => (
            "@connections",
            Err(ApiError::bad_request(format!("Invalid connectionId: {id}"))),
        ),
        Err(PathError::NotFound) => ("unknown", Err(ApiError::no_route(&method, uri.path()))),
    };
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    if route != "healthz" {
        info!(%request_id, %method, route, path = uri.path(), status = response.status().as_u16(), "management call");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}
