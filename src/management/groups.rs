//! Groups and broadcast (Switchboard extensions; AWS has neither):
//! `PUT|DELETE /@groups/{group}/members/{id}` add or remove a member on any node,
//! `GET /@groups/{group}/members` lists members cluster-wide, `POST /@groups/{group}` and
//! `POST /@broadcast` send one message to a group or to every connection.
//!
//! A broadcast answers 202 once every node has been handed the message (one publish); each
//! member's copy is then queued without waiting, and a member whose queue is full misses it.

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use tracing::info;

use super::error::ApiError;
use super::{Listing, read_message};
use crate::cluster::GroupName;
use crate::connections::ConnectionId;
use crate::state::AppState;

/// PUT: add a connection to a group (204; idempotent).
pub async fn add(
    state: &AppState,
    group: &GroupName,
    id: ConnectionId,
) -> Result<Response, ApiError> {
    state.cluster.join(group, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// DELETE: remove a connection from a group (204; idempotent).
pub async fn remove(
    state: &AppState,
    group: &GroupName,
    id: ConnectionId,
) -> Result<Response, ApiError> {
    state.cluster.leave(group, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
struct MembersPage {
    members: Vec<String>,
    cursor: Option<String>,
}

/// GET: `{"members": ["id", …], "cursor": "…" | null}`.
pub async fn members(
    state: &AppState,
    group: &GroupName,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let listing = Listing::from_query(query)?;
    let page = state
        .cluster
        .list_members(group, listing.cursor.as_deref(), listing.limit)
        .await?;
    Ok(Json(MembersPage {
        members: page.items,
        cursor: page.cursor,
    })
    .into_response())
}

/// POST: broadcast the body to `group`'s members, or to every connection when `None`.
pub async fn broadcast(
    state: &AppState,
    group: Option<&GroupName>,
    body: Body,
) -> Result<Response, ApiError> {
    let message = read_message(state, body).await?;
    let fanout = state.cluster.broadcast(group, message).await?;
    let group = group.map_or("*", GroupName::as_str);
    match fanout {
        Some(f) => info!(
            group,
            delivered = f.delivered,
            dropped = f.dropped,
            "broadcast"
        ),
        None => info!(group, "broadcast published to the backplane"),
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
