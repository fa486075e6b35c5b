//! `@connections`: POST queues a message for a connection on any node, GET describes it,
//! DELETE closes it (optionally with `?code=&reason=`, which AWS cannot do), and GET on
//! `@connections` lists every connection in the cluster a page at a time.
//!
//! A 200 on POST means the owning node put the message in the connection's outbound queue;
//! 410 that the connection (or its node) is gone; 429 that its queue is full; 413 that the
//! body is over the limit; 503 that the backplane could not reach the owner.

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use super::error::ApiError;
use super::{Listing, iso, read_message};
use crate::cluster::ConnectionRecord;
use crate::connections::Close;
use crate::connections::ConnectionId;
use crate::connections::close::is_sendable;
use crate::state::AppState;

/// POST: queue the body as one frame (text when it is UTF-8, binary otherwise).
pub async fn post(state: &AppState, id: ConnectionId, body: Body) -> Result<Response, ApiError> {
    let message = read_message(state, body).await?;
    state.cluster.post(&id, message).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    source_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    /// The authorizer's `principalId` (a Switchboard extension; AWS has none here).
    #[serde(skip_serializing_if = "Option::is_none")]
    principal_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    connected_at: String,
    identity: Identity,
    last_active_at: String,
    /// A resumable connection's state, `connected` or `suspended` (a Switchboard
    /// extension, docs/resume.md; absent for other connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

/// GET: `{connectedAt, identity: {sourceIp, userAgent}, lastActiveAt}` with ISO-8601 times.
pub async fn get(state: &AppState, id: ConnectionId) -> Result<Response, ApiError> {
    let (record, last_active) = state.cluster.describe(&id).await?;
    Ok(Json(Description {
        connected_at: iso(record.connected_at),
        identity: Identity {
            source_ip: record.source_ip,
            user_agent: record.user_agent,
            principal_id: record.authorizer.and_then(|a| a.principal_id),
        },
        last_active_at: iso(last_active),
        status: record.status,
    })
    .into_response())
}

/// DELETE: close the connection; 204 once the close is requested.
pub async fn delete(
    state: &AppState,
    id: ConnectionId,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let close = close_from_query(query)?;
    state.cluster.close(&id, close).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    connection_id: String,
    connected_at: String,
    identity: Identity,
    stage: String,
}

#[derive(Serialize)]
struct ConnectionsPage {
    connections: Vec<Listed>,
    cursor: Option<String>,
}

/// GET `@connections?cursor=&limit=`: `{"connections": [...], "cursor": "…" | null}`.
pub async fn list(state: &AppState, query: Option<&str>) -> Result<Response, ApiError> {
    let listing = Listing::from_query(query)?;
    let page = state
        .cluster
        .list_connections(listing.cursor.as_deref(), listing.limit)
        .await?;
    let connections = page
        .items
        .into_iter()
        .map(|r: ConnectionRecord| Listed {
            connection_id: r.connection_id,
            connected_at: iso(r.connected_at),
            identity: Identity {
                source_ip: r.source_ip,
                user_agent: r.user_agent,
                principal_id: r.authorizer.and_then(|a| a.principal_id),
            },
            stage: r.stage,
        })
        .collect();
    Ok(Json(ConnectionsPage {
        connections,
        cursor: page.cursor,
    })
    .into_response())
}

/// `?code=4000&reason=bye`: a sendable code and a reason of at most 123 bytes.
fn close_from_query(query: Option<&str>) -> Result<Close, ApiError> {
    let mut close = Close::normal();
    let mut custom_reason = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "code" => {
                let code: u16 = value
                    .parse()
                    .ok()
                    .filter(|c| is_sendable(*c))
                    .ok_or_else(|| ApiError::bad_request(format!("Invalid close code: {value}")))?;
                close.code = code;
            }
            "reason" => {
                if value.len() > 123 {
                    return Err(ApiError::bad_request(
                        "Close reason is longer than 123 bytes",
                    ));
                }
                custom_reason = Some(value.into_owned());
            }
            _ => {}
        }
    }
    if let Some(reason) = custom_reason {
        close.reason = reason;
    } else if close.code != 1000 {
        close.reason = String::new();
    }
    Ok(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_query_is_checked() {
        assert_eq!(close_from_query(None).unwrap(), Close::normal());
        assert_eq!(
            close_from_query(Some("code=4000&reason=bye")).unwrap(),
            Close::new(4000, "bye")
        );
        assert_eq!(
            close_from_query(Some("code=4001")).unwrap(),
            Close::new(4001, "")
        );
        assert_eq!(
            close_from_query(Some("reason=later")).unwrap(),
            Close::new(1000, "later")
        );
        for bad in [
            "code=1005",
            "code=1006",
            "code=999",
            "code=x",
            "code=5000",
            &format!("reason={}", "a".repeat(124)),
        ] {
            assert!(close_from_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
