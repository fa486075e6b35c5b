//! `@connections/{id}`: POST queues a message for a connection, GET describes it, DELETE
//! closes it (optionally with `?code=&reason=`, which AWS cannot do).
//!
//! A 200 on POST means the message is in the connection's outbound queue; 410 that the
//! connection is gone; 429 that its queue is full; 413 that the body is over the limit.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, TimeZone as _, Utc};
use http::StatusCode;
use http_body_util::{BodyExt as _, Limited};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::error::ApiError;
use crate::app::AppState;
use crate::connections::{CloseRequest, ConnectionId, SendError};
use crate::edge::close::{Close, is_sendable};

/// POST: queue the body as one frame (text when it is UTF-8, binary otherwise).
pub async fn post(state: &AppState, id: ConnectionId, body: Body) -> Result<Response, ApiError> {
    let limit = state.api.client.max_message_bytes;
    let handle = state.registry.get(&id).ok_or_else(ApiError::gone)?;
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| ApiError::too_large(limit))?
        .to_bytes();
    let message = match std::str::from_utf8(&bytes) {
        Ok(_) => Message::Text(
            bytes
                .try_into()
                .map_err(|_| ApiError::bad_request("body is not UTF-8"))?,
        ),
        Err(_) => Message::Binary(bytes),
    };
    match handle.try_send(message) {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(SendError::Gone) => Err(ApiError::gone()),
        Err(SendError::Full) => Err(ApiError::limit_exceeded(
            "The connection's outbound queue is full",
        )),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    connected_at: String,
    identity: Identity,
    last_active_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    source_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
}

/// GET: `{connectedAt, identity: {sourceIp, userAgent}, lastActiveAt}` with ISO-8601 times.
pub fn get(state: &AppState, id: ConnectionId) -> Result<Response, ApiError> {
    let handle = state.registry.get(&id).ok_or_else(ApiError::gone)?;
    let info = &handle.shared.info;
    let description = Description {
        connected_at: iso(info.connected_at_ms),
        identity: Identity {
            source_ip: info.source_ip.to_string(),
            user_agent: info.user_agent.clone(),
        },
        last_active_at: iso(handle.shared.last_active_ms.load(Ordering::Relaxed) as i64),
    };
    Ok(Json(description).into_response())
}

/// DELETE: close the connection; 204 once the close is requested.
pub fn delete(
    state: &AppState,
    id: ConnectionId,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let close = close_from_query(query)?;
    let handle = state.registry.get(&id).ok_or_else(ApiError::gone)?;
    handle.shared.request_close(CloseRequest {
        code: close.code,
        reason: close.reason,
    });
    Ok(StatusCode::NO_CONTENT.into_response())
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

fn iso(epoch_ms: i64) -> String {
    Utc.timestamp_millis_opt(epoch_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
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
