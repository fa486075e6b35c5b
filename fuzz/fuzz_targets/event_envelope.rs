//! The Lambda-proxy event builder fed arbitrary strings, headers, query parameters, codes
//! and times: the envelope is always valid JSON and carries the inputs unchanged.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard::connections::{ConnInfo, ConnectionId, NodeTag};
use switchboard::integrations::event::{Event, EventDetail};

#[derive(Debug, Arbitrary)]
enum Kind {
    Connect {
        headers: Vec<(String, String)>,
        query: Vec<(String, String)>,
    },
    Message {
        message_id: String,
        body: String,
        is_base64: bool,
    },
    Disconnect {
        code: u16,
        reason: String,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    node: [u8; 4],
    connected_at_ms: i64,
    request_time_ms: i64,
    ip: u128,
    user_agent: Option<String>,
    stage: String,
    domain_name: String,
    api_id: String,
    route_key: String,
    request_id: String,
    kind: Kind,
}

fuzz_target!(|input: Input| {
    let id = ConnectionId::new(NodeTag(input.node));
    let conn = ConnInfo {
        id,
        id_text: id.to_string(),
        connected_at_ms: input.connected_at_ms,
        source_ip: IpAddr::V6(Ipv6Addr::from(input.ip)),
        user_agent: input.user_agent.clone(),
        stage: Arc::from(input.stage.as_str()),
        domain_name: input.domain_name.clone(),
        authorizer: None,
        trace_id: switchboard::connections::TraceId([1; 16]),
    };
    let detail = match &input.kind {
        Kind::Connect { headers, query } => EventDetail::Connect { headers, query },
        Kind::Message {
            message_id,
            body,
            is_base64,
        } => EventDetail::Message {
            message_id,
            body,
            is_base64: *is_base64,
        },
        Kind::Disconnect { code, reason } => EventDetail::Disconnect {
            code: *code,
            reason,
        },
    };
    let event = Event {
        conn: &conn,
        api_id: &input.api_id,
        route_key: &input.route_key,
        request_id: &input.request_id,
        request_time_ms: input.request_time_ms,
        detail,
    };
    let json: Value = serde_json::from_slice(&event.to_proxy_json()).expect("valid JSON");
    let context = &json["requestContext"];
    assert_eq!(context["routeKey"], input.route_key.as_str());
    assert_eq!(context["connectionId"], conn.id_text.as_str());
    assert_eq!(context["stage"], input.stage.as_str());
    assert_eq!(context["requestTimeEpoch"], input.request_time_ms);
    assert_eq!(context["connectedAt"], input.connected_at_ms);
    match &input.kind {
        Kind::Connect { headers, query } => {
            assert_eq!(context["eventType"], "CONNECT");
            for (name, value) in headers {
                // headers keeps the last value of a name; multiValueHeaders all of them.
                let last = headers.iter().rev().find(|(n, _)| n == name).unwrap();
                assert_eq!(json["headers"][name], last.1.as_str());
                let all = json["multiValueHeaders"][name].as_array().unwrap();
                assert!(all.iter().any(|v| v == value.as_str()));
            }
            assert_eq!(
                json.get("queryStringParameters").is_some(),
                !query.is_empty()
            );
            assert!(json.get("body").is_none());
        }
        Kind::Message {
            body, is_base64, ..
        } => {
            assert_eq!(context["eventType"], "MESSAGE");
            assert_eq!(json["body"], body.as_str());
            assert_eq!(json["isBase64Encoded"], *is_base64);
        }
        Kind::Disconnect { code, reason } => {
            assert_eq!(context["eventType"], "DISCONNECT");
            assert_eq!(context["disconnectStatusCode"], *code);
            assert_eq!(context["disconnectReason"], reason.as_str());
        }
    }
});
