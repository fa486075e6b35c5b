//! The events integrations receive, and their Lambda-proxy JSON envelopes.
//!
//! The envelopes match AWS's CONNECT, MESSAGE and DISCONNECT events field for field
//! (reference/aws-websocket-apis.md §2.3), so handlers written for AWS read them unchanged.
//! Pure: builds bytes from borrowed data, no I/O.

use std::collections::BTreeMap;

use chrono::{TimeZone as _, Utc};
use http::{HeaderMap, HeaderName};
use serde::Serialize;

use crate::connections::{Close, ConnInfo, now_ms};

/// The reserved route keys.
pub mod keys {
    /// Runs before the handshake is accepted.
    pub const CONNECT: &str = "$connect";
    /// Runs after every close.
    pub const DISCONNECT: &str = "$disconnect";
    /// Catches messages no other route matches.
    pub const DEFAULT: &str = "$default";
}

/// Which of the three event types this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The `$connect` handshake.
    Connect,
    /// A message from the client.
    Message,
    /// The connection has closed.
    Disconnect,
}

impl EventType {
    /// The AWS name (`requestContext.eventType`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Message => "MESSAGE",
            Self::Disconnect => "DISCONNECT",
        }
    }
}

/// What is specific to each event type.
#[derive(Debug, Clone, Copy)]
pub enum EventDetail<'a> {
    /// The handshake's headers (names as the gateway presents them) and query parameters,
    /// in the order received, repeated names included.
    Connect {
        /// Handshake headers.
        headers: &'a [(String, String)],
        /// Query-string parameters, percent-decoded.
        query: &'a [(String, String)],
        /// For a resumable connection (docs/resume.md), whether this connect resumed a
        /// suspended session (`requestContext.resumed`); `None` for every other one.
        resumed: Option<bool>,
    },
    /// A message.
    Message {
        /// `requestContext.messageId`.
        message_id: &'a str,
        /// The message text, or its base64 form when `is_base64` is set.
        body: &'a str,
        /// Whether `body` is base64 of a binary frame.
        is_base64: bool,
    },
    /// The close.
    Disconnect {
        /// `requestContext.disconnectStatusCode`.
        code: u16,
        /// `requestContext.disconnectReason`.
        reason: &'a str,
    },
}

/// One event for an integration.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The connection it concerns.
    pub conn: &'a ConnInfo,
    /// `requestContext.apiId`.
    pub api_id: &'a str,
    /// The route actually selected (`$default` on fallback).
    pub route_key: &'a str,
    /// `requestContext.requestId` (also `extendedRequestId`).
    pub request_id: &'a str,
    /// Epoch milliseconds when the gateway received the event.
    pub request_time_ms: i64,
    /// Type-specific data.
    pub detail: EventDetail<'a>,
}

impl<'a> Event<'a> {
    /// The CONNECT event of a handshake (its time is the connection's `connectedAt`).
    pub fn connect(
        conn: &'a ConnInfo,
        api_id: &'a str,
        request_id: &'a str,
        headers: &'a [(String, String)],
        query: &'a [(String, String)],
    ) -> Self {
        Self {
            conn,
            api_id,
            route_key: keys::CONNECT,
            request_id,
            request_time_ms: conn.connected_at_ms,
            detail: EventDetail::Connect {
                headers,
                query,
                resumed: None,
            },
        }
    }

    /// This CONNECT event for a resumable connection: `requestContext.resumed` says
    /// whether it resumed a suspended session.
    pub fn resumable(mut self, resumed: bool) -> Self {
        if let EventDetail::Connect { resumed: r, .. } = &mut self.detail {
            *r = Some(resumed);
        }
        self
    }

    /// The MESSAGE event of a message received at `received_ms` and routed to `route_key`.
    #[allow(clippy::too_many_arguments)]
    pub fn message(
        conn: &'a ConnInfo,
        api_id: &'a str,
        route_key: &'a str,
        request_id: &'a str,
        received_ms: i64,
        message_id: &'a str,
        body: &'a str,
        is_base64: bool,
    ) -> Self {
        Self {
            conn,
            api_id,
            route_key,
            request_id,
            request_time_ms: received_ms,
            detail: EventDetail::Message {
                message_id,
                body,
                is_base64,
            },
        }
    }

    /// The DISCONNECT event of a close, now.
    pub fn disconnect(
        conn: &'a ConnInfo,
        api_id: &'a str,
        request_id: &'a str,
        close: &'a Close,
    ) -> Self {
        Self {
            conn,
            api_id,
            route_key: keys::DISCONNECT,
            request_id,
            request_time_ms: now_ms(),
            detail: EventDetail::Disconnect {
                code: close.code,
                reason: &close.reason,
            },
        }
    }

    /// CONNECT, MESSAGE or DISCONNECT.
    pub fn event_type(&self) -> EventType {
        match self.detail {
            EventDetail::Connect { .. } => EventType::Connect,
            EventDetail::Message { .. } => EventType::Message,
            EventDetail::Disconnect { .. } => EventType::Disconnect,
        }
    }

    /// The message body (empty for other events).
    pub fn body(&self) -> &str {
        match self.detail {
            EventDetail::Message { body, .. } => body,
            _ => "",
        }
    }

    /// `requestContext.messageId` (MESSAGE only).
    pub fn message_id(&self) -> Option<&'a str> {
        match self.detail {
            EventDetail::Message { message_id, .. } => Some(message_id),
            _ => None,
        }
    }

    /// `requestContext.disconnectStatusCode` and `disconnectReason` (DISCONNECT only).
    pub fn disconnect_close(&self) -> Option<(u16, &'a str)> {
        match self.detail {
            EventDetail::Disconnect { code, reason } => Some((code, reason)),
            _ => None,
        }
    }

    /// `requestTime` in AWS's CLF form, `11/Nov/2024:11:35:24 +0000`.
    pub fn request_time_clf(&self) -> String {
        clf_time(self.request_time_ms)
    }

    /// The Lambda-proxy envelope as JSON bytes.
    pub fn to_proxy_json(&self) -> Vec<u8> {
        let request_time = self.request_time_clf();
        let (message_id, disconnect_status_code, disconnect_reason) = match self.detail {
            EventDetail::Message { message_id, .. } => (Some(message_id), None, None),
            EventDetail::Disconnect { code, reason } => (None, Some(code), Some(reason)),
            EventDetail::Connect { .. } => (None, None, None),
        };
        let resumed = match self.detail {
            EventDetail::Connect { resumed, .. } => resumed,
            _ => None,
        };
        let source_ip = self.conn.source_ip.to_string();
        let request_context = RequestContext {
            route_key: self.route_key,
            event_type: self.event_type().as_str(),
            extended_request_id: self.request_id,
            request_time: &request_time,
            message_direction: "IN",
            stage: &self.conn.stage,
            connected_at: self.conn.connected_at_ms,
            request_time_epoch: self.request_time_ms,
            identity: Identity {
                source_ip: &source_ip,
                user_agent: self.conn.user_agent.as_deref(),
            },
            request_id: self.request_id,
            domain_name: &self.conn.domain_name,
            connection_id: &self.conn.id_text,
            api_id: self.api_id,
            message_id,
            disconnect_status_code,
            disconnect_reason,
            authorizer: self.conn.authorizer.as_deref(),
            resumed,
        };
        let result = match self.detail {
            EventDetail::Connect { headers, query, .. } => {
                let (headers, multi_headers) = single_and_multi(headers);
                let (query, multi_query) = single_and_multi(query);
                serde_json::to_vec(&ConnectEnvelope {
                    headers,
                    multi_value_headers: multi_headers,
                    query_string_parameters: (!query.is_empty()).then_some(query),
                    multi_value_query_string_parameters: (!multi_query.is_empty())
                        .then_some(multi_query),
                    request_context,
                    is_base64_encoded: false,
                })
            }
            EventDetail::Message {
                body, is_base64, ..
            } => serde_json::to_vec(&MessageEnvelope {
                request_context,
                body,
                is_base64_encoded: is_base64,
            }),
            EventDetail::Disconnect { .. } => {
                let host = self.conn.domain_name.as_str();
                let headers = BTreeMap::from([
                    ("Host", host),
                    ("x-api-key", ""),
                    ("X-Forwarded-For", ""),
                    ("x-restapi", ""),
                ]);
                let multi = headers.iter().map(|(k, v)| (*k, vec![*v])).collect();
                serde_json::to_vec(&DisconnectEnvelope {
                    headers,
                    multi_value_headers: multi,
                    request_context,
                    is_base64_encoded: false,
                })
            }
        };
        // Serialising these borrowed structs has no failure path (string keys, no maps
        // with non-string keys); an empty object is the harmless fallback.
        result.unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Handshake headers as `(Name, value)` pairs, as events present them, without the names
/// in `skip` (the CONNECT event leaves out `Connection` and `Upgrade`, as AWS does). Names
/// are title-cased (`sec-websocket-key` → `Sec-WebSocket-Key`) because the HTTP parser
/// lowercases them.
pub fn header_pairs(headers: &HeaderMap, skip: &[HeaderName]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !skip.contains(name))
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

/// Formats epoch milliseconds as `dd/Mon/yyyy:HH:MM:SS +0000`.
pub fn clf_time(epoch_ms: i64) -> String {
    match Utc.timestamp_millis_opt(epoch_ms).single() {
        Some(t) => t.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        None => String::new(),
    }
}

type Single<'a> = BTreeMap<&'a str, &'a str>;
type Multi<'a> = BTreeMap<&'a str, Vec<&'a str>>;

/// AWS's `headers` keeps the last value of a repeated name; `multiValueHeaders` keeps all.
fn single_and_multi(pairs: &[(String, String)]) -> (Single<'_>, Multi<'_>) {
    let mut single = BTreeMap::new();
    let mut multi: Multi<'_> = BTreeMap::new();
    for (k, v) in pairs {
        single.insert(k.as_str(), v.as_str());
        multi.entry(k.as_str()).or_default().push(v.as_str());
    }
    (single, multi)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    source_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    route_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    event_type: &'a str,
    extended_request_id: &'a str,
    request_time: &'a str,
    message_direction: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect_status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect_reason: Option<&'a str>,
    stage: &'a str,
    connected_at: i64,
    request_time_epoch: i64,
    identity: Identity<'a>,
    request_id: &'a str,
    domain_name: &'a str,
    connection_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<&'a crate::connections::AuthorizerContext>,
    /// A Switchboard extension, on the CONNECT event of a resumable connection only.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectEnvelope<'a> {
    headers: Single<'a>,
    multi_value_headers: Multi<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<Single<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_value_query_string_parameters: Option<Multi<'a>>,
    request_context: RequestContext<'a>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageEnvelope<'a> {
    request_context: RequestContext<'a>,
    body: &'a str,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DisconnectEnvelope<'a> {
    headers: Single<'a>,
    multi_value_headers: Multi<'a>,
    request_context: RequestContext<'a>,
    is_base64_encoded: bool,
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
    use crate::connections::{ConnectionId, NodeTag};
    use serde_json::Value;

    fn conn() -> ConnInfo {
        let id = ConnectionId::new(NodeTag([0; 4]));
        ConnInfo {
            id,
            id_text: id.to_string(),
            connected_at_ms: 1_731_324_924_553,
            source_ip: "166.90.225.1".parse().unwrap(),
            user_agent: Some("ua/1".into()),
            stage: "prod".into(),
            domain_name: "gw.example".into(),
            authorizer: None,
            trace_id: crate::connections::TraceId::random(),
        }
    }

    fn event<'a>(conn: &'a ConnInfo, detail: EventDetail<'a>, route: &'a str) -> Value {
        let e = Event {
            conn,
            api_id: "abc123",
            route_key: route,
            request_id: "REQ",
            request_time_ms: 1_731_324_924_561,
            detail,
        };
        serde_json::from_slice(&e.to_proxy_json()).unwrap()
    }

    #[test]
    fn connect_envelope_has_aws_fields() {
        let c = conn();
        let headers = vec![
            ("Host".to_owned(), "gw.example".to_owned()),
            ("X-Multi".to_owned(), "a".to_owned()),
            ("X-Multi".to_owned(), "b".to_owned()),
        ];
        let v = event(
            &c,
            EventDetail::Connect {
                headers: &headers,
                query: &[],
                resumed: None,
            },
            "$connect",
        );
        assert_eq!(v["headers"]["X-Multi"], "b");
        assert_eq!(
            v["multiValueHeaders"]["X-Multi"],
            serde_json::json!(["a", "b"])
        );
        assert!(
            v.get("queryStringParameters").is_none(),
            "omitted when empty"
        );
        assert!(v.get("body").is_none(), "no body on CONNECT");
        assert_eq!(v["isBase64Encoded"], false);
        let rc = &v["requestContext"];
        assert_eq!(rc["routeKey"], "$connect");
        assert_eq!(rc["eventType"], "CONNECT");
        assert_eq!(rc["messageDirection"], "IN");
        assert_eq!(rc["stage"], "prod");
        assert_eq!(rc["connectedAt"], 1_731_324_924_553i64);
        assert_eq!(rc["requestTimeEpoch"], 1_731_324_924_561i64);
        assert_eq!(rc["requestTime"], "11/Nov/2024:11:35:24 +0000");
        assert_eq!(rc["identity"]["sourceIp"], "166.90.225.1");
        assert_eq!(rc["identity"]["userAgent"], "ua/1");
        assert_eq!(rc["requestId"], "REQ");
        assert_eq!(rc["extendedRequestId"], "REQ");
        assert_eq!(rc["domainName"], "gw.example");
        assert_eq!(rc["connectionId"], c.id_text.as_str());
        assert_eq!(rc["apiId"], "abc123");
    }

    #[test]
    fn connect_envelope_carries_query() {
        let c = conn();
        let query = vec![("token".to_owned(), "t1".to_owned())];
        let v = event(
            &c,
            EventDetail::Connect {
                headers: &[],
                query: &query,
                resumed: None,
            },
            "$connect",
        );
        assert_eq!(v["queryStringParameters"]["token"], "t1");
        assert_eq!(
            v["multiValueQueryStringParameters"]["token"],
            serde_json::json!(["t1"])
        );
    }

    #[test]
    fn message_envelope() {
        let c = conn();
        let v = event(
            &c,
            EventDetail::Message {
                message_id: "MSG",
                body: "{\"action\":\"chat\"}",
                is_base64: false,
            },
            "chat",
        );
        assert_eq!(v["body"], "{\"action\":\"chat\"}");
        assert_eq!(v["requestContext"]["messageId"], "MSG");
        assert_eq!(v["requestContext"]["eventType"], "MESSAGE");
        assert!(v.get("headers").is_none());
    }

    #[test]
    fn disconnect_envelope() {
        let c = conn();
        let v = event(
            &c,
            EventDetail::Disconnect {
                code: 1005,
                reason: "Client-side close frame status not set",
            },
            "$disconnect",
        );
        let rc = &v["requestContext"];
        assert_eq!(rc["disconnectStatusCode"], 1005);
        assert_eq!(
            rc["disconnectReason"],
            "Client-side close frame status not set"
        );
        assert_eq!(v["headers"]["Host"], "gw.example");
        assert_eq!(v["headers"]["x-api-key"], "");
        assert_eq!(
            v["multiValueHeaders"]["X-Forwarded-For"],
            serde_json::json!([""])
        );
    }
    #[test]
    fn authorizer_context_on_every_event() {
        let mut c = conn();
        let none = event(
            &c,
            EventDetail::Disconnect {
                code: 1000,
                reason: "",
            },
            "$disconnect",
        );
        assert!(none["requestContext"].get("authorizer").is_none());
        c.authorizer = Some(std::sync::Arc::new(crate::connections::AuthorizerContext {
            principal_id: Some("user-1".into()),
            context: BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]),
        }));
        let details = [
            EventDetail::Connect {
                headers: &[],
                query: &[],
                resumed: None,
            },
            EventDetail::Message {
                message_id: "M",
                body: "x",
                is_base64: false,
            },
            EventDetail::Disconnect {
                code: 1000,
                reason: "",
            },
        ];
        for detail in details {
            let v = event(&c, detail, "r");
            assert_eq!(
                v["requestContext"]["authorizer"],
                serde_json::json!({"principalId": "user-1", "tenant": "acme"})
            );
        }
    }
}
