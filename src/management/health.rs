//! Operational endpoints: `/healthz` (alive; in `mod.rs`), `/readyz` (ready for new
//! clients: not draining, backplane connected when configured — no credentials needed, so
//! a load balancer can poll it), `/metrics` (Prometheus exposition) and
//! `POST /admin/drain` (start draining; see [`crate::lifecycle`]).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::state::AppState;
use crate::telemetry::metrics;

/// 200 `{"status":"ready"}`, or 503 `{"status":"draining"|"backplane unavailable"}`.
pub fn ready(state: &AppState) -> Response {
    match state.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": why})),
        )
            .into_response(),
    }
}

/// The Prometheus exposition text. Gauges summed over the connections (bytes waiting in
/// outbound queues) are computed now, so the write path never touches a shared counter
/// for them.
pub fn metrics(state: &AppState) -> Response {
    metrics::queue_bytes(state.cluster.local.registry.queued_bytes() as f64);
    let body = metrics::render().unwrap_or_default();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Starts draining; 202. Readiness fails before the answer leaves (the node's main loop
/// then closes the listener and the connections).
pub fn drain(state: &AppState) -> Response {
    state.set_draining();
    state.drain_requested.cancel();
    (StatusCode::ACCEPTED, Json(json!({"status": "draining"}))).into_response()
}
