//! Messages end to end through the real binary: route selection (the AWS developer-guide
//! table), integrations (proxy, passthrough, mock), two-way routes, error frames, the
//! in-flight cap, and the frame/message limits with the close codes `$disconnect` reports.
//!
//! Tests that wait on a slow backend (integration timeout, calls in flight) run the gateway
//! in-process on paused time ([`InProcess`]): the backend's delay passes without sleeping.
mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};

/// The body of the developer guide's selection-expression table.
const DG_BODY: &str = r#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

/// Checks `text` is exactly AWS's error frame `{"message": "<message>", "connectionId":"<id>",
/// "requestId":"<rid>"}` (spacing included) for connection `id`; returns the request id.
fn assert_error_frame(text: &str, message: &str, id: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let obj = v.as_object().expect("error frame is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["connectionId", "message", "requestId"], "{text}");
    let rid = v["requestId"].as_str().expect("requestId").to_owned();
    assert!(!rid.is_empty(), "{text}");
    assert_eq!(
        text,
        format!(r#"{{"message": "{message}", "connectionId":"{id}", "requestId":"{rid}"}}"#)
    );
    rid
}

/// Sends one raw frame.
async fn send_frame(ws: &mut Client, frame: Frame) {
    ws.send(Message::Frame(frame)).await.expect("send frame");
}

/// Sends `data` as one text message split into frames of at most `chunk` bytes.
async fn send_fragmented_text(ws: &mut Client, data: &[u8], chunk: usize) {
    let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(OpData::Text)
        } else {
            OpCode::Data(OpData::Continue)
        };
        send_frame(ws, Frame::message(piece.to_vec(), opcode, i == last)).await;
    }
}

/// A JSON message `{"action":"<action>","pad":"xxx…"}` exactly `len` bytes long.
fn padded_message(action: &str, len: usize) -> String {
    let head = format!(r#"{{"action":"{action}","pad":""#);
    let tail = r#""}"#;
    let pad = len - head.len() - tail.len();
    let text = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(text.len(), len);
    text
}

/// A config section for one HTTP integration.
fn http_integration(name: &str, url: &str, extra: &str) -> String {
    format!("\n[integrations.{name}]\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

/// A config section for one route.
fn route(key: &str, integration: &str, two_way: bool) -> String {
    format!("\n[routes.\"{key}\"]\nintegration = \"{integration}\"\ntwo_way = {two_way}\n")
}

/// Expects the backend's very next request to be the `$disconnect` event, reporting `code`
/// and `reason` (so a MESSAGE that slipped through before the close fails the test).
async fn expect_disconnect(backend: &Backend, id: &str, code: u16, reason: &str) {
    let event = backend.next().await.json();
    assert_eq!(
        event["requestContext"]["eventType"], "DISCONNECT",
        "{event}"
    );
    let ctx = &event["requestContext"];
    assert_eq!(ctx["routeKey"], "$disconnect");
    assert_eq!(ctx["connectionId"], id);
    assert_eq!(ctx["disconnectStatusCode"], code, "{event}");
    assert_eq!(ctx["disconnectReason"], reason, "{event}");
}

// ------------------------------------------------------------------------------------------
// Routing
// ------------------------------------------------------------------------------------------

/// Starts a gateway whose every route (and `$default`) answers with `$context.routeKey`.
async fn route_key_gateway(expression: &str, keys: &[&str]) -> Gateway {
    let mut config = base_config();
    config.push_str(&format!(
        "\n[api]\nroute_selection_expression = '{expression}'\n"
    ));
    config.push_str(WHOAMI);
    config.push_str(
        "\n[integrations.key]\ntype = \"mock\"\ntemplate = 'routeKey=$context.routeKey'\n",
    );
    for key in keys.iter().chain(&["$default"]) {
        config.push_str(&route(key, "key", true));
    }
    Gateway::start(&config).await
}

#[tokio::test]
async fn developer_guide_selection_table_through_a_socket() {
    // (expression, evaluated value per the DG table); each value is a configured route.
    let table = [
        ("$request.body.action", "join"),
        ("${request.body.action}", "join"),
        (
            "${request.body.service}/${request.body.action}",
            "chat/join",
        ),
        (
            "${request.body.action}-${request.body.invalidPath}",
            "join-",
        ),
        ("action", "action"),
    ];
    // Every gateway knows every key, so only the right evaluation picks the right one.
    let mut all_keys: Vec<&str> = table.iter().map(|(_, k)| *k).collect();
    all_keys.sort_unstable();
    all_keys.dedup();
    for (expression, want) in table {
        let gw = route_key_gateway(expression, &all_keys).await;
        let mut ws = gw.connect().await;
        ws.send(Message::text(DG_BODY)).await.unwrap();
        assert_eq!(
            next_text(&mut ws).await,
            format!("routeKey={want}"),
            "expression {expression}"
        );
    }
    // `\$default` evaluates to the literal `$default`: the $default route, by that name.
    let gw = route_key_gateway(r"\$default", &["join"]).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(DG_BODY)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=$default");
}

#[tokio::test]
async fn composite_expression_routes_chat_join_and_falls_back_otherwise() {
    let gw = route_key_gateway(
        "${request.body.service}/${request.body.action}",
        &["chat/join"],
    )
    .await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(DG_BODY)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=chat/join");
    // Same action, other service: `news/join` is no route → $default.
    ws.send(Message::text(r#"{"service":"news","action":"join"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=$default");
    // Exact match only: case differs → $default.
    ws.send(Message::text(r#"{"service":"Chat","action":"join"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=$default");
}

#[tokio::test]
async fn nested_path_selects_route() {
    let gw = route_key_gateway("$request.body.data.room", &["room1234", "join"]).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(DG_BODY)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=room1234");
    // Path present but the parent is missing → "" → $default.
    ws.send(Message::text(r#"{"action":"join"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=$default");
}

#[tokio::test]
async fn non_string_values_are_stringified() {
    let gw = route_key_gateway("$request.body.action", &["5", "true"]).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(r#"{"action":5}"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=5");
    ws.send(Message::text(r#"{"action":true}"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "routeKey=true");
}

/// A gateway with `$default` and `join` proxied to `backend`.
async fn recorded_default_gateway(backend: &Backend) -> Gateway {
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("$default", "rec", false));
    config.push_str(&route("join", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/events"), ""));
    Gateway::start(&config).await
}

#[tokio::test]
async fn missing_path_and_non_json_go_to_default_with_route_key_default() {
    let backend = Backend::start().await;
    let gw = recorded_default_gateway(&backend).await;
    let (mut ws, id) = gw.connect_with_id().await;

    // Control: an exact match reports its own key.
    ws.send(Message::text(r#"{"action":"join"}"#))
        .await
        .unwrap();
    let event = backend.next_event("MESSAGE").await;
    assert_eq!(event["requestContext"]["routeKey"], "join");

    let cases = [
        r#"{"other":1}"#,       // missing path → ""
        r#"{"action":null}"#,   // null → ""
        r#"{"action":"nope"}"#, // no such route
        "hello, not json",      // not JSON
        "42",                   // JSON, but not an object or array
        r#""join""#,            // a bare JSON string
        "{broken",              // malformed JSON
    ];
    for body in cases {
        ws.send(Message::text(body)).await.unwrap();
        let event = backend.next_event("MESSAGE").await;
        assert_eq!(event["requestContext"]["routeKey"], "$default", "{body}");
        assert_eq!(event["body"], body);
        assert_eq!(event["requestContext"]["connectionId"], id.as_str());
    }
}

#[tokio::test]
async fn unknown_action_without_default_gets_exact_forbidden_frame_and_socket_stays_open() {
    let backend = Backend::start().await;
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("join", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/join"), ""));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;

    ws.send(Message::text(r#"{"action":"leave"}"#))
        .await
        .unwrap();
    let first = assert_error_frame(&next_text(&mut ws).await, "Forbidden", &id);
    // Non-JSON has nowhere to go either.
    ws.send(Message::text("not json")).await.unwrap();
    let second = assert_error_frame(&next_text(&mut ws).await, "Forbidden", &id);
    assert_ne!(first, second, "each message gets its own request id");
    backend.expect_none(Duration::from_millis(200)).await;

    // The socket still works: routes still answer and still reach the backend.
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["connectionId"], id.as_str());
    ws.send(Message::text(r#"{"action":"join"}"#))
        .await
        .unwrap();
    assert_eq!(backend.next().await.path, "/join");
}

#[tokio::test]
async fn too_deep_json_gets_bad_request_body_frame_and_no_call() {
    let backend = Backend::start().await;
    let mut config = base_config();
    config.push_str("\n[client]\nmax_json_depth = 3\n");
    config.push_str(WHOAMI);
    config.push_str(&route("$default", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/"), ""));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;

    ws.send(Message::text(r#"{"a":{"b":{"c":{"d":1}}}}"#))
        .await
        .unwrap();
    let text = next_text(&mut ws).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let mid = v["messageId"].as_str().expect("messageId");
    assert!(!mid.is_empty());
    assert_eq!(
        text,
        format!(
            r#"{{"message" : "Bad request body", "connectionId": "{id}", "messageId": "{mid}"}}"#
        )
    );
    backend.expect_none(Duration::from_millis(200)).await;

    // Depth exactly at the limit is evaluated and routed; the socket is still open.
    ws.send(Message::text(r#"{"a":{"b":{}}}"#)).await.unwrap();
    let event = backend.next_event("MESSAGE").await;
    assert_eq!(event["body"], r#"{"a":{"b":{}}}"#);
    assert_eq!(event["requestContext"]["routeKey"], "$default");
}

/// The depth limit is about JSON: plain text with more unbalanced `{` than
/// `client.max_json_depth` (the default, 64) is not JSON, so it goes to `$default` like any
/// other text; a real JSON document nested 65 deep still gets `Bad request body`.
#[tokio::test]
async fn plain_text_with_many_brackets_goes_to_default() {
    let backend = Backend::start().await;
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("$default", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/"), ""));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;

    for text in [
        "{".repeat(65) + " hello",
        "[".repeat(65) + " hello " + &"]".repeat(65),
    ] {
        ws.send(Message::text(text.clone())).await.unwrap();
        let event = backend.next_event("MESSAGE").await;
        assert_eq!(event["body"], text.as_str());
        assert_eq!(event["requestContext"]["routeKey"], "$default");
    }

    let deep = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
    ws.send(Message::text(deep)).await.unwrap();
    let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(v["message"], "Bad request body");
    assert_eq!(v["connectionId"], id.as_str());
    backend.expect_none(Duration::from_millis(200)).await;
}

// ------------------------------------------------------------------------------------------
// Integrations
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_proxy_event_field_by_field() {
    let backend = Backend::start().await;
    let mut config = base_config();
    config.push_str("\n[api]\nid = \"testapi\"\n");
    config.push_str(WHOAMI);
    config.push_str(&route("sendmessage", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/msg"), ""));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let body = r#"{"action": "sendmessage", "message": "Hello from client"}"#;
    let before = chrono_now_ms();
    ws.send(Message::text(body)).await.unwrap();
    let received = backend.next().await;
    let after = chrono_now_ms();
    assert_eq!(received.path, "/msg");
    assert_eq!(
        received.headers.get("content-type").unwrap(),
        "application/json"
    );
    let event = received.json();

    let mut top: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        ["body", "isBase64Encoded", "requestContext"],
        "no headers on MESSAGE"
    );
    assert_eq!(event["body"], body);
    assert_eq!(event["isBase64Encoded"], false);

    let ctx = &event["requestContext"];
    assert_eq!(ctx["routeKey"], "sendmessage");
    assert_eq!(ctx["eventType"], "MESSAGE");
    assert_eq!(ctx["connectionId"], id.as_str());
    assert_eq!(ctx["messageDirection"], "IN");
    assert_eq!(ctx["stage"], "prod");
    assert_eq!(ctx["apiId"], "testapi");
    assert_eq!(ctx["domainName"], gw.client_addr.to_string());
    assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
    let message_id = ctx["messageId"].as_str().expect("messageId");
    assert!(!message_id.is_empty());
    let request_id = ctx["requestId"].as_str().expect("requestId");
    assert!(!request_id.is_empty());
    assert_eq!(ctx["extendedRequestId"], request_id);
    assert!(ctx.get("disconnectStatusCode").is_none());
    assert!(ctx.get("disconnectReason").is_none());
    let epoch = ctx["requestTimeEpoch"].as_i64().expect("requestTimeEpoch");
    assert!(
        (before..=after).contains(&epoch),
        "{before} <= {epoch} <= {after}"
    );
    let connected_at = ctx["connectedAt"].as_i64().expect("connectedAt");
    assert!(connected_at <= epoch && connected_at > before - 10_000);
    // CLF: dd/Mon/yyyy:HH:MM:SS +0000
    let time = ctx["requestTime"].as_str().expect("requestTime");
    let b = time.as_bytes();
    assert_eq!(time.len(), 26, "{time}");
    assert_eq!((b[2], b[6], b[11]), (b'/', b'/', b':'), "{time}");
    assert!(time.ends_with(" +0000"), "{time}");

    // A second message gets fresh ids.
    ws.send(Message::text(body)).await.unwrap();
    let second = backend.next_event("MESSAGE").await;
    assert_ne!(second["requestContext"]["messageId"], message_id);
    assert_ne!(second["requestContext"]["requestId"], request_id);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn passthrough_mode_posts_raw_body_with_switchboard_headers() {
    let backend = Backend::with(|_| (200, "raw reply".into())).await;
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("$default", "raw", true));
    config.push_str(&route("chat", "raw", true));
    config.push_str(&http_integration(
        "raw",
        &backend.url("/raw"),
        "mode = \"passthrough\"",
    ));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;

    for (body, key) in [
        (r#"{"action":"chat","text":"hi"}"#, "chat"),
        ("plain text, not JSON", "$default"),
    ] {
        ws.send(Message::text(body)).await.unwrap();
        let r = backend.next().await;
        assert_eq!(r.path, "/raw");
        assert_eq!(&r.body[..], body.as_bytes(), "raw body, no envelope");
        let h = |name: &str| {
            r.headers
                .get(name)
                .unwrap_or_else(|| panic!("missing {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h("x-switchboard-connection-id"), id);
        assert_eq!(h("x-switchboard-route-key"), key);
        assert_eq!(h("x-switchboard-event-type"), "MESSAGE");
        assert_eq!(h("x-switchboard-stage"), "prod");
        assert!(!h("x-switchboard-request-id").is_empty());
        assert!(r.headers.get("x-switchboard-is-base64-encoded").is_none());
        // The response body goes back as it is.
        assert_eq!(next_text(&mut ws).await, "raw reply");
    }
}

/// What the proxy backend of the two-way tests answers, by selected route key.
fn proxy_answer(r: &Received) -> (u16, String) {
    let v = r.json();
    let key = v["requestContext"]["routeKey"].as_str().unwrap_or_default();
    match key {
        "proxy" => (200, r#"{"statusCode":200,"body":"hello proxy"}"#.into()),
        "status500" => (200, r#"{"statusCode":500,"body":"still sent"}"#.into()),
        "headers" => (
            200,
            r#"{"statusCode":200,"headers":{"X-A":"b"},"multiValueHeaders":{"X-B":["c"]},"body":"with headers","isBase64Encoded":false}"#
                .into(),
        ),
        "plain" => (200, "plain text".into()),
        "plainjson" => (200, r#"{"a":1}"#.into()),
        "nobody" => (200, r#"{"statusCode":200}"#.into()),
        "empty" => (200, String::new()),
        "binary" => (
            200,
            r#"{"statusCode":200,"body":"AAEC/w==","isBase64Encoded":true}"#.into(),
        ),
        "malformed" => (200, r#"{"statusCode":200,"body":"x","extra":1}"#.into()),
        "http500" => (500, "backend exploded".into()),
        "http404" => (404, "not here".into()),
        "oneway" => (200, r#"{"statusCode":200,"body":"must not arrive"}"#.into()),
        _ => (200, String::new()),
    }
}

async fn proxy_gateway(backend: &Backend) -> Gateway {
    let mut config = base_config();
    config.push_str(WHOAMI);
    for key in [
        "proxy",
        "status500",
        "headers",
        "plain",
        "plainjson",
        "nobody",
        "empty",
        "binary",
        "malformed",
        "http500",
        "http404",
    ] {
        config.push_str(&route(key, "proxy", true));
    }
    config.push_str(&route("oneway", "proxy", false));
    config.push_str(&route("$disconnect", "proxy", false));
    config.push_str(&http_integration("proxy", &backend.url("/p"), ""));
    Gateway::start(&config).await
}

async fn send_action(ws: &mut Client, action: &str) {
    ws.send(Message::text(format!(r#"{{"action":"{action}"}}"#)))
        .await
        .unwrap();
}

#[tokio::test]
async fn two_way_proxy_responses_send_the_body_back() {
    let backend = Backend::with(proxy_answer).await;
    let gw = proxy_gateway(&backend).await;
    let (mut ws, _id) = gw.connect_with_id().await;
    for (action, want) in [
        ("proxy", "hello proxy"),
        ("status500", "still sent"),
        ("headers", "with headers"),
        ("plain", "plain text"),
        ("plainjson", r#"{"a":1}"#),
        // A 4xx from the backend is an answer, not an integration error.
        ("http404", "not here"),
    ] {
        send_action(&mut ws, action).await;
        assert_eq!(next_text(&mut ws).await, want, "route {action}");
        let event = backend.next_event("MESSAGE").await;
        assert_eq!(event["requestContext"]["routeKey"], action);
    }
}

#[tokio::test]
async fn base64_proxy_body_is_sent_as_a_binary_frame() {
    let backend = Backend::with(proxy_answer).await;
    let gw = proxy_gateway(&backend).await;
    let mut ws = gw.connect().await;
    send_action(&mut ws, "binary").await;
    match next_message(&mut ws).await {
        Message::Binary(data) => assert_eq!(&data[..], &[0u8, 1, 2, 255]),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[tokio::test]
async fn no_body_sends_no_frame_and_one_way_sends_nothing() {
    let backend = Backend::with(proxy_answer).await;
    let gw = proxy_gateway(&backend).await;
    let mut ws = gw.connect().await;
    for action in ["nobody", "empty", "oneway"] {
        send_action(&mut ws, action).await;
        // The backend was called...
        let event = backend.next_event("MESSAGE").await;
        assert_eq!(event["requestContext"]["routeKey"], action);
        // ...and nothing comes back.
        expect_silence(&mut ws, Duration::from_millis(300)).await;
        // The next two-way answer is the very next frame.
        send_action(&mut ws, "plain").await;
        assert_eq!(next_text(&mut ws).await, "plain text", "after {action}");
        backend.next_event("MESSAGE").await;
    }
}

#[tokio::test]
async fn malformed_proxy_response_and_backend_500_give_internal_server_error() {
    let backend = Backend::with(proxy_answer).await;
    let gw = proxy_gateway(&backend).await;
    let (mut ws, id) = gw.connect_with_id().await;
    for action in ["malformed", "http500"] {
        send_action(&mut ws, action).await;
        let event = backend.next_event("MESSAGE").await;
        let rid = assert_error_frame(&next_text(&mut ws).await, "Internal server error", &id);
        assert_eq!(
            event["requestContext"]["requestId"],
            rid.as_str(),
            "{action}"
        );
        // The socket stays open and keeps working.
        send_action(&mut ws, "proxy").await;
        assert_eq!(next_text(&mut ws).await, "hello proxy", "after {action}");
        backend.next_event("MESSAGE").await;
    }
    // Closing normally afterwards reports the client's code to $disconnect.
    ws.close(None).await.unwrap();
    expect_disconnect(
        &backend,
        &id,
        1005,
        "Client-side close frame status not set",
    )
    .await;
}

#[tokio::test]
async fn unreachable_backend_gives_internal_server_error() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("gone", "gone", true));
    config.push_str(&http_integration(
        "gone",
        &format!("http://127.0.0.1:{port}/x"),
        "",
    ));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    send_action(&mut ws, "gone").await;
    assert_error_frame(&next_text(&mut ws).await, "Internal server error", &id);
    // Still open.
    send_action(&mut ws, "whoami").await;
    assert!(next_text(&mut ws).await.contains(&id));
}

#[tokio::test(start_paused = true)]
async fn integration_timeout_gives_internal_server_error() {
    let backend = Backend::slow(Duration::from_secs(3)).await;
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("slow", "slow", true));
    config.push_str(&http_integration(
        "slow",
        &backend.url("/slow"),
        "timeout_ms = 100",
    ));
    let gw = InProcess::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let started = Instant::now();
    send_action(&mut ws, "slow").await;
    let event = backend.next_event("MESSAGE").await;
    let rid = assert_error_frame(&next_text(&mut ws).await, "Internal server error", &id);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert_eq!(event["requestContext"]["requestId"], rid.as_str());
    send_action(&mut ws, "whoami").await;
    assert!(next_text(&mut ws).await.contains(&id));
}

/// A slow backend that answers with the message body it got, after `delay`.
async fn slow_echo(delay: Duration) -> Backend {
    Backend::with_headers_delayed(delay, |r| {
        let body = r.json()["body"].as_str().unwrap_or_default().to_owned();
        (200, Vec::new(), format!("echo:{body}"))
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn integration_calls_do_not_block_reading() {
    let backend = slow_echo(Duration::from_millis(800)).await;
    let mut config = base_config();
    config.push_str(WHOAMI);
    config.push_str(&route("slow", "slow", true));
    config.push_str(&route("fast", "fast", true));
    config.push_str(&http_integration("slow", &backend.url("/slow"), ""));
    config.push_str("\n[integrations.fast]\ntype = \"mock\"\ntemplate = \"fast reply\"\n");
    let gw = InProcess::start(&config).await;
    let mut ws = gw.connect().await;
    send_action(&mut ws, "slow").await;
    backend.next().await; // the slow call is in flight
    send_action(&mut ws, "fast").await;
    assert_eq!(next_text(&mut ws).await, "fast reply");
    assert_eq!(next_text(&mut ws).await, r#"echo:{"action":"slow"}"#);
}

#[tokio::test(start_paused = true)]
async fn inflight_cap_pauses_reading_and_loses_nothing() {
    let delay = Duration::from_millis(500);
    let backend = slow_echo(delay).await;
    let mut config = base_config();
    config.push_str("\n[client]\nmax_inflight_per_connection = 1\n");
    config.push_str(&route("slow", "slow", true));
    config.push_str(&http_integration("slow", &backend.url("/slow"), ""));
    let gw = InProcess::start(&config).await;
    let mut ws = gw.connect().await;
    let m1 = r#"{"action":"slow","n":1}"#;
    let m2 = r#"{"action":"slow","n":2}"#;
    ws.send(Message::text(m1)).await.unwrap();
    ws.send(Message::text(m2)).await.unwrap();

    assert_eq!(backend.next().await.json()["body"], m1);
    // At the cap the second message is not read while the first call runs.
    backend.expect_none(delay * 3 / 5).await;
    assert_eq!(next_text(&mut ws).await, format!("echo:{m1}"));
    assert_eq!(backend.next().await.json()["body"], m2);
    assert_eq!(next_text(&mut ws).await, format!("echo:{m2}"));
}

// ------------------------------------------------------------------------------------------
// Limits
// ------------------------------------------------------------------------------------------

/// A backend for the limit tests: `$default` answers `len=<body length>`, `$disconnect` is
/// recorded.
async fn length_backend() -> Backend {
    Backend::with(|r| {
        let v = r.json();
        match v["requestContext"]["eventType"].as_str() {
            Some("MESSAGE") => (
                200,
                format!("len={}", v["body"].as_str().unwrap_or_default().len()),
            ),
            _ => (200, String::new()),
        }
    })
    .await
}

/// A gateway with `$default` (two-way) and `$disconnect` on `backend`, plus `client` settings.
async fn limits_gateway(backend: &Backend, client: &str) -> Gateway {
    let mut config = base_config();
    config.push_str(&format!("\n[client]\n{client}\n"));
    config.push_str(WHOAMI);
    config.push_str(&route("$default", "rec", true));
    config.push_str(&route("$disconnect", "rec", false));
    config.push_str(&http_integration("rec", &backend.url("/rec"), ""));
    Gateway::start(&config).await
}

/// Expects the server to close with `code` and `$disconnect` to report the same.
async fn expect_closed_with(ws: &mut Client, backend: &Backend, id: &str, code: u16, reason: &str) {
    let frame = expect_close(ws, Duration::from_secs(5))
        .await
        .expect("close frame with a code");
    assert_eq!(u16::from(frame.code), code, "reason {:?}", frame.reason);
    assert_eq!(frame.reason.as_str(), reason);
    expect_disconnect(backend, id, code, reason).await;
}

#[tokio::test]
async fn single_frame_over_32k_closes_1009() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.send(Message::text(padded_message("big", 33 * 1024)))
        .await
        .unwrap();
    expect_closed_with(&mut ws, &backend, &id, 1009, "Message too big").await;
    // The oversized message never reached the backend as a MESSAGE.
    backend.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn frame_of_exactly_32k_is_accepted() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, _id) = gw.connect_with_id().await;
    ws.send(Message::text(padded_message("big", 32 * 1024)))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "len=32768");
}

#[tokio::test]
async fn fragmented_100k_message_is_delivered_whole() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let text = padded_message("big", 100 * 1024);
    send_fragmented_text(&mut ws, text.as_bytes(), 32 * 1024).await;
    let event = backend.next_event("MESSAGE").await;
    assert_eq!(event["body"].as_str().unwrap(), text);
    assert_eq!(event["requestContext"]["connectionId"], id.as_str());
    assert_eq!(next_text(&mut ws).await, "len=102400");
    // Still open.
    send_action(&mut ws, "whoami").await;
    assert!(next_text(&mut ws).await.contains(&id));
}

#[tokio::test]
async fn fragmented_129k_message_closes_1009() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let text = padded_message("big", 129 * 1024);
    send_fragmented_text(&mut ws, text.as_bytes(), 32 * 1024).await;
    expect_closed_with(&mut ws, &backend, &id, 1009, "Message too big").await;
    backend.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn binary_frame_closes_1003_when_rejected() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "binary_frames = \"reject\"").await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    expect_closed_with(
        &mut ws,
        &backend,
        &id,
        1003,
        "Binary frames are not supported",
    )
    .await;
    backend.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn binary_frame_with_base64_goes_to_default_encoded() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "binary_frames = \"base64\"").await;
    let (mut ws, id) = gw.connect_with_id().await;
    // Even bytes that look like a routable JSON action go to $default.
    let mut data = br#"{"action":"whoami"}"#.to_vec();
    data.extend_from_slice(&[0, 1, 2, 255]);
    ws.send(Message::binary(data)).await.unwrap();
    let event = backend.next_event("MESSAGE").await;
    let encoded = "eyJhY3Rpb24iOiJ3aG9hbWkifQABAv8=";
    assert_eq!(event["body"], encoded);
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["requestContext"]["routeKey"], "$default");
    assert_eq!(event["requestContext"]["connectionId"], id.as_str());
    assert_eq!(next_text(&mut ws).await, format!("len={}", encoded.len()));
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_1007() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, id) = gw.connect_with_id().await;
    send_frame(
        &mut ws,
        Frame::message(
            vec![b'h', b'i', 0xff, 0xfe],
            OpCode::Data(OpData::Text),
            true,
        ),
    )
    .await;
    expect_closed_with(&mut ws, &backend, &id, 1007, "Invalid UTF-8 in text frame").await;
    backend.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_1007() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, id) = gw.connect_with_id().await;
    // E2 82 starts a 3-byte sequence; 28 ('(') cannot continue it.
    send_frame(
        &mut ws,
        Frame::message(b"abc\xE2\x82".to_vec(), OpCode::Data(OpData::Text), false),
    )
    .await;
    send_frame(
        &mut ws,
        Frame::message(b"\x28def".to_vec(), OpCode::Data(OpData::Continue), true),
    )
    .await;
    expect_closed_with(&mut ws, &backend, &id, 1007, "Invalid UTF-8 in text frame").await;
    backend.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn valid_utf8_split_across_fragments_is_reassembled() {
    let backend = length_backend().await;
    let gw = limits_gateway(&backend, "").await;
    let (mut ws, _id) = gw.connect_with_id().await;
    // "€" is E2 82 AC; split it between frames.
    send_frame(
        &mut ws,
        Frame::message(
            b"price \xE2\x82".to_vec(),
            OpCode::Data(OpData::Text),
            false,
        ),
    )
    .await;
    send_frame(
        &mut ws,
        Frame::message(b"\xAC 5".to_vec(), OpCode::Data(OpData::Continue), true),
    )
    .await;
    let event = backend.next_event("MESSAGE").await;
    assert_eq!(event["body"], "price € 5");
    assert_eq!(
        next_text(&mut ws).await,
        format!("len={}", "price € 5".len())
    );
}
