//! `@connections` on the client listener (`client.callbacks`), where AWS handlers look:
//! `https://{domainName}/{stage}/@connections/{id}`.
//!
//! The edge does not know the management API; the composition root hands it the router
//! that answers these calls (`management::router`), so authentication (bearer and/or
//! SigV4), throttles and error shapes are the management API's own. The edge only
//! decides which requests go there: a request that is not a WebSocket upgrade, whose
//! path is `/{stage}/@connections/{id}` (`@` also as `%40`) for a configured stage.
//! Everything else — `/metrics`, `/admin/drain`, groups, broadcast, the listing, paths
//! without a stage — gets the handshake's answers as before (404, 426, …).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use tower_service::Service as _;

use crate::api::Api;

/// Whether a request is a callback the client listener serves.
pub fn is_callback(api: &Api, path: &str, headers: &HeaderMap) -> bool {
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    !is_upgrade && is_callback_path(path, |stage| api.stages.iter().any(|s| **s == *stage))
}

/// `/{stage}/@connections/{id}`, each segment percent-decoded; the id is not checked here
/// (the management API answers 400 for a malformed one).
fn is_callback_path(path: &str, is_stage: impl Fn(&str) -> bool) -> bool {
    let mut segments = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy());
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(stage), Some(resource), Some(id), None) => {
            is_stage(&stage) && resource == "@connections" && !id.is_empty()
        }
        _ => false,
    }
}

/// Serves one callback through `router`, which sees the TCP peer as the management
/// listener's would (its throttles key on it).
pub async fn serve(
    mut router: Router,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<axum::body::Body>, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    router.call(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_paths_with_a_stage() {
        let is_stage = |s: &str| s == "prod";
        for yes in ["/prod/@connections/abc", "/prod/%40connections/abc%3D"] {
            assert!(is_callback_path(yes, is_stage), "{yes}");
        }
        for no in [
            "/prod/%40Connections/abc",
            "/@connections/abc",
            "/dev/@connections/abc",
            "/prod/@connections",
            "/prod/@connections/",
            "/prod/@connections/abc/extra",
            "/prod/@groups/g",
            "/prod/@broadcast",
            "/metrics",
            "/admin/drain",
            "/healthz",
            "/prod",
            "/",
        ] {
            assert!(!is_callback_path(no, is_stage), "{no}");
        }
    }
}
