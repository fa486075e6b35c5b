//! The management API's per-caller throttle (`limits.management_requests`): which bucket
//! a call draws from. A caller with a valid bearer token is keyed by a hash of the token
//! (so several backends behind one address each get their own rate); anyone else by peer
//! address, so a flood of wrong credentials is throttled before it is even refused.

use std::net::IpAddr;

use http::{HeaderMap, header};

use super::auth;
use crate::state::AppState;
use crate::throttle::Caller;

/// Whether this call is over its caller's rate (answer 429 `LimitExceededException`).
pub fn throttled(state: &AppState, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
    !state.limits.management_call(&caller(state, headers, peer))
}

/// The bucket key of a call.
pub fn caller(state: &AppState, headers: &HeaderMap, peer: Option<IpAddr>) -> Caller {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        Some(token) if auth::is_authorized(&state.settings().management, headers) => {
            state.limits.token_caller(token)
        }
        _ => peer.map_or(Caller::Unknown, Caller::Peer),
    }
}
