//! Connection lifecycle through the real binary: `$disconnect` codes, DELETE, idle and
//! lifetime timers, server pings, the management API, SIGTERM, logs and `check-config`.
//!
//! The timer tests run the gateway in-process on paused time ([`InProcess`]): the clock
//! jumps to the next timer instead of the test sleeping through it, and `Instant` here is
//! tokio's, so the elapsed times they assert are the gateway's own clock.
mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A configuration with `whoami`, a one-way `$default` (mock, answers nothing), and a
/// `$disconnect` route POSTing proxy events to `backend`. `client` goes into `[client]`.
fn config(backend: &Backend, client: &str) -> String {
    format!(
        r#"{base}
[client]
{client}

[server]
shutdown_grace_secs = 5

[routes.whoami]
integration = "whoami"
two_way = true

[routes."$default"]
integration = "sink"

[routes."$disconnect"]
integration = "events"

[integrations.whoami]
type = "mock"
template = '{{"connectionId": "$context.connectionId"}}'

[integrations.sink]
type = "mock"
template = "ignored"

[integrations.events]
type = "http"
url = "{url}"
timeout_ms = 2000
"#,
        base = base_config(),
        url = backend.url("/events"),
    )
}

/// A gateway with [`config`] and its `$disconnect` backend.
async fn start(client: &str) -> (Gateway, Backend) {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, client)).await;
    (gw, backend)
}

/// Like [`start`], with the gateway in-process, for tests on paused time.
async fn start_in_process(client: &str) -> (InProcess, Backend) {
    let backend = Backend::start().await;
    let gw = InProcess::start(&config(&backend, client)).await;
    (gw, backend)
}

/// The DISCONNECT event for connection `id` (other connections' events are skipped),
/// within `limit`.
async fn disconnect_of(backend: &Backend, id: &str, limit: Duration) -> Value {
    tokio::time::timeout(limit, async {
        loop {
            let event = backend.next_event("DISCONNECT").await;
            if event["requestContext"]["connectionId"] == id {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no $disconnect for {id} within {limit:?}"))
}

/// `(disconnectStatusCode, disconnectReason)` of an event.
fn code_reason(event: &Value) -> (u64, String) {
    let rc = &event["requestContext"];
    assert_eq!(rc["routeKey"], "$disconnect");
    assert_eq!(rc["eventType"], "DISCONNECT");
    (
        rc["disconnectStatusCode"]
            .as_u64()
            .expect("disconnectStatusCode"),
        rc["disconnectReason"]
            .as_str()
            .expect("disconnectReason")
            .to_owned(),
    )
}

/// A close frame's `(code, reason)`.
fn frame(close: Option<CloseFrame>) -> (u16, String) {
    let f = close.expect("close frame with a status");
    (u16::from(f.code), f.reason.to_string())
}

/// Reads the client until the stream ends (so tungstenite flushes its close reply).
async fn drain(ws: &mut Client) {
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Whether `s` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_iso_ms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn parse_iso(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// A management request without credentials.
fn anonymous(gw: &Gateway, method: Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, gw.management_url(path))
}

/// `(status, x-amzn-errortype, body)` of a response.
async fn parts(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, error_type, response.text().await.unwrap())
}

/// A raw TCP client that completes the WebSocket handshake on `/prod` and then does nothing.
async fn raw_handshake(gw: &Endpoints) -> TcpStream {
    let mut stream = TcpStream::connect(gw.client_addr).await.unwrap();
    let request = format!(
        "GET /prod HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.client_addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("handshake response within 5 s")
            .unwrap();
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Reads `ws` for `wait`, allowing only pings; returns how many pings arrived.
async fn only_pings_for(ws: &mut Client, wait: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return pings,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("expected only pings, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// $disconnect codes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn client_close_code_and_reason_reach_disconnect() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let (code, _) = frame(expect_close(&mut ws, Duration::from_secs(3)).await);
    assert_eq!(code, 4001, "the gateway echoes the client's close code");
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (4001, "bye".to_owned()));
    assert_eq!(event["requestContext"]["connectionId"], id.as_str());
    // DISCONNECT headers are synthetic.
    assert_eq!(event["headers"]["x-api-key"], "");
    assert_eq!(event["headers"]["X-Forwarded-For"], "");
    assert_eq!(event["headers"]["x-restapi"], "");
    assert_eq!(event["headers"]["Host"], gw.client_addr.to_string());
}

#[tokio::test]
async fn client_close_without_code_reports_1005() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.close(None).await.unwrap();
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(
        code_reason(&event),
        (1005, "Client-side close frame status not set".to_owned())
    );
}

#[tokio::test]
async fn tcp_drop_reports_1006() {
    let (gw, backend) = start("").await;
    let (ws, id) = gw.connect_with_id().await;
    let stream = ws.into_inner();
    drop(stream);
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    let (code, reason) = code_reason(&event);
    assert_eq!(code, 1006);
    assert_eq!(reason, "Connection closed abnormally");
}

#[tokio::test]
async fn delete_closes_with_1000_and_then_the_connection_is_gone() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    let (status, error_type, body) = parts(gw.request(Method::DELETE, &path, "").await).await;
    assert_eq!((status, error_type, body.as_str()), (204, None, ""));
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(
        frame(close),
        (1000, "Connection Closed Normally".to_owned())
    );
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(
        code_reason(&event),
        (1000, "Connection Closed Normally".to_owned())
    );
    // Gone: 410 with an empty body for every method.
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let (status, error_type, body) =
            parts(gw.request(method.clone(), &path, "late").await).await;
        assert_eq!(status, 410, "{method}");
        assert_eq!(error_type.as_deref(), Some("GoneException"), "{method}");
        assert_eq!(body, "", "{method}: 410 has an empty body");
    }
}

#[tokio::test]
async fn post_right_after_delete_is_410() {
    let (gw, _backend) = start("").await;
    let (_ws, id) = gw.connect_with_id().await;
    let (status, _) = gw.delete_connection(&id).await;
    assert_eq!(status, 204);
    // The client does not answer the close, so the session is still closing; the
    // connection must nevertheless be gone for the management API.
    let (status, body) = gw.post(&id, "too late").await;
    assert_eq!((status, body.as_str()), (410, ""));
}

#[tokio::test]
async fn delete_with_code_and_reason() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}?code=4000&reason=bye");
    let (status, _) = gw.call(Method::DELETE, &path, "").await;
    assert_eq!(status, 204);
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(frame(close), (4000, "bye".to_owned()));
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (4000, "bye".to_owned()));
}

#[tokio::test]
async fn delete_with_reserved_code_is_400_and_keeps_the_connection() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}?code=1006");
    let (status, error_type, body) = parts(gw.request(Method::DELETE, &path, "").await).await;
    assert_eq!(status, 400);
    assert_eq!(error_type.as_deref(), Some("BadRequestException"));
    let v: Value = serde_json::from_str(&body).expect("JSON error body");
    assert!(v["message"].as_str().unwrap().contains("1006"), "{body}");
    let (status, _) = gw.post(&id, "still here").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "still here");
}

// ---------------------------------------------------------------------------------------
// Timers (in-process, on paused time)
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_with_1001() {
    let (gw, backend) = start_in_process("idle_timeout_secs = 1").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let started = Instant::now();
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert_eq!(frame(close), (1001, "Going away".to_owned()));
    assert!(
        elapsed >= Duration::from_millis(700),
        "closed too early: {elapsed:?}"
    );
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn outbound_posts_reset_the_idle_timer() {
    let (gw, backend) = start_in_process("idle_timeout_secs = 1").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let body = format!("keepalive {n}");
        let (status, _) = gw.post(&id, body.clone()).await;
        assert_eq!(
            status,
            200,
            "connection closed after {:?}",
            started.elapsed()
        );
        assert_eq!(next_text(&mut ws).await, body);
        n += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(n >= 5);
    // Once the posts stop, the idle timer runs out.
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(frame(close), (1001, "Going away".to_owned()));
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn inbound_messages_reset_the_idle_timer() {
    let (gw, backend) = start_in_process("idle_timeout_secs = 1").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        // `$default` is one-way: nothing comes back, so only inbound frames count here.
        ws.send(Message::text("tick")).await.unwrap();
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(400), ws.next()).await {
            panic!(
                "unexpected {msg:?} after {:?} (the connection should stay idle-open)",
                started.elapsed()
            );
        }
    }
    let (status, _) = gw.post(&id, "alive").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "alive");
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(frame(close), (1001, "Going away".to_owned()));
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
}

/// Sends a ping every 300 ms while reading; returns the close frame and when it came.
async fn ping_until_close(ws: &mut Client, limit: Duration) -> (Option<CloseFrame>, Duration) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        assert!(started.elapsed() < limit, "no close within {limit:?}");
        tokio::select! {
            _ = tick.tick() => {
                ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(f))) => return (f, started.elapsed()),
                Some(Ok(Message::Pong(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn client_pings_do_not_reset_the_idle_timer() {
    let (gw, backend) = start_in_process("idle_timeout_secs = 1").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let (close, elapsed) = ping_until_close(&mut ws, Duration::from_secs(4)).await;
    assert_eq!(frame(close), (1001, "Going away".to_owned()));
    assert!(
        elapsed < Duration::from_millis(1800),
        "pings kept the connection open for {elapsed:?}"
    );
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn client_pings_reset_the_idle_timer_when_configured() {
    let (gw, _backend) =
        start_in_process("idle_timeout_secs = 1\npings_count_as_activity = true").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    while started.elapsed() < Duration::from_millis(2500) {
        tokio::select! {
            _ = tick.tick() => ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap(),
            msg = ws.next() => match msg {
                Some(Ok(Message::Pong(_))) => {}
                other => panic!("unexpected {other:?} after {:?}", started.elapsed()),
            }
        }
    }
    let (status, _) = gw.post(&id, "alive").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "alive");
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_even_an_active_connection() {
    let (gw, backend) = start_in_process("idle_timeout_secs = 1\nmax_lifetime_secs = 2").await;
    let connected = Instant::now();
    let (mut ws, id) = gw.connect_with_id().await;
    let mut n = 0;
    let close = loop {
        assert!(
            connected.elapsed() < Duration::from_secs(4),
            "no close within 4 s"
        );
        // Keep it busy in both directions.
        ws.send(Message::text(format!("tick {n}"))).await.unwrap();
        let _ = gw.post(&id, format!("push {n}")).await;
        n += 1;
        match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(Message::Text(_)))) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
        // Drain anything else already there.
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(1), ws.next()).await
        {
            if let Message::Close(f) = msg {
                return finish_lifetime(f, connected, &mut ws, &backend, &id).await;
            }
        }
    };
    finish_lifetime(close, connected, &mut ws, &backend, &id).await;
}

async fn finish_lifetime(
    close: Option<CloseFrame>,
    connected: Instant,
    ws: &mut Client,
    backend: &Backend,
    id: &str,
) {
    let elapsed = connected.elapsed();
    assert_eq!(frame(close), (1001, "Going away".to_owned()));
    assert!(
        elapsed >= Duration::from_millis(1700),
        "closed after {elapsed:?}, before the lifetime"
    );
    drain(ws).await;
    let event = disconnect_of(backend, id, Duration::from_secs(5)).await;
    assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn server_pings_drop_a_peer_that_never_answers() {
    let (gw, backend) = start_in_process("ping_interval_secs = 1").await;
    let (mut ws, live_id) = gw.connect_with_id().await;
    let connected = Instant::now();
    let _raw = raw_handshake(&gw).await;
    // The tungstenite client answers pings while it reads.
    let reader = async {
        let pings = only_pings_for(&mut ws, Duration::from_millis(3500)).await;
        (pings, ws)
    };
    let dead = async {
        let event = tokio::time::timeout(
            Duration::from_millis(3500),
            backend.next_event("DISCONNECT"),
        )
        .await
        .expect("no $disconnect within 3.5 s");
        (event, connected.elapsed())
    };
    let ((pings, mut ws), (event, elapsed)) = tokio::join!(reader, dead);
    assert_ne!(
        event["requestContext"]["connectionId"],
        live_id.as_str(),
        "the answering client was dropped"
    );
    assert_eq!(code_reason(&event), (1006, "Ping timeout".to_owned()));
    assert!(
        elapsed >= Duration::from_millis(1500),
        "dropped after {elapsed:?}, before missing a ping"
    );
    assert!(pings >= 2, "the live client saw {pings} pings");
    let (status, _) = gw.post(&live_id, "still here").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "still here");
    backend.expect_none(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------
// Management API
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn post_delivers_text_and_non_utf8_as_binary() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let (status, body) = gw.post(&id, "hello there").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(
        next_message(&mut ws).await,
        Message::text("hello there"),
        "UTF-8 body arrives as a text frame"
    );
    let bytes = vec![0xff, 0xfe, 0x00, 0x80, b'a'];
    let (status, _) = gw.post(&id, bytes.clone()).await;
    assert_eq!(status, 200);
    match next_message(&mut ws).await {
        Message::Binary(data) => assert_eq!(&data[..], &bytes[..]),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[tokio::test]
async fn post_to_a_client_closed_connection_is_410_with_empty_body() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.close(None).await.unwrap();
    drain(&mut ws).await;
    disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    let path = format!("/@connections/{id}");
    let (status, error_type, body) = parts(gw.request(Method::POST, &path, "anyone?").await).await;
    assert_eq!(status, 410);
    assert_eq!(error_type.as_deref(), Some("GoneException"));
    assert_eq!(body, "");
}

#[tokio::test]
async fn post_over_131072_bytes_is_413() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    let too_big = "x".repeat(131_073);
    let (status, error_type, body) = parts(gw.request(Method::POST, &path, too_big).await).await;
    assert_eq!(status, 413);
    assert_eq!(error_type.as_deref(), Some("PayloadTooLargeException"));
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    assert!(v["message"].is_string(), "{body}");
    // Exactly at the limit is fine, and nothing of the refused one was delivered.
    let (status, _) = gw.post(&id, "y".repeat(131_072)).await;
    assert_eq!(status, 200);
    let text = next_text(&mut ws).await;
    assert_eq!(text.len(), 131_072);
    assert!(text.bytes().all(|b| b == b'y'));
}

#[tokio::test]
async fn post_to_a_full_queue_is_429() {
    let (gw, _backend) = start("outbound_queue_messages = 4\noutbound_queue_bytes = 131072").await;
    // Connected, then never reads again.
    let (_ws, id) = gw.connect_with_id().await;
    let chunk = "z".repeat(64 * 1024);
    let mut accepted = 0;
    let mut refused = None;
    let path = format!("/@connections/{id}");
    for _ in 0..2000 {
        let r = gw.request(Method::POST, &path, chunk.clone()).await;
        match r.status().as_u16() {
            200 => accepted += 1,
            429 => {
                refused = Some(parts(r).await);
                break;
            }
            other => panic!("unexpected status {other} after {accepted} posts"),
        }
    }
    let (status, error_type, body) =
        refused.unwrap_or_else(|| panic!("no 429 after {accepted} accepted posts"));
    assert_eq!(status, 429);
    assert_eq!(error_type.as_deref(), Some("LimitExceededException"));
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    assert!(v["message"].is_string(), "{body}");
    assert!(accepted >= 2, "only {accepted} posts accepted before 429");
    // Other connections are unaffected.
    let (mut other, other_id) = gw.connect_with_id().await;
    let (status, _) = gw.post(&other_id, "fine").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut other).await, "fine");
}

#[tokio::test]
async fn malformed_connection_id_is_400() {
    let (gw, _backend) = start("").await;
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let path = "/@connections/abc";
        let (status, error_type, body) = parts(gw.request(method.clone(), path, "").await).await;
        assert_eq!(status, 400, "{method}");
        assert_eq!(error_type.as_deref(), Some("BadRequestException"));
        let v: Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(
            v,
            serde_json::json!({"message": "Invalid connectionId: abc"})
        );
    }
    // Well-formed but unknown: 410, empty body.
    let (status, body) = gw.post("AAAAAAAAAAAAAAAA", "x").await;
    assert_eq!((status, body.as_str()), (410, ""));
}

#[tokio::test]
async fn get_describes_the_connection() {
    let (gw, _backend) = start("").await;
    let before = chrono::Utc::now();
    let (_ws, id) = gw.connect_with_id().await;
    let (status, v) = gw.get_connection(&id).await;
    assert_eq!(status, 200);
    let connected_at = v["connectedAt"].as_str().expect("connectedAt");
    let last_active_at = v["lastActiveAt"].as_str().expect("lastActiveAt");
    assert!(is_iso_ms(connected_at), "{connected_at}");
    assert!(is_iso_ms(last_active_at), "{last_active_at}");
    let connected = parse_iso(connected_at);
    assert!(connected >= before - chrono::Duration::milliseconds(5));
    assert!(connected <= chrono::Utc::now());
    assert!(parse_iso(last_active_at) >= connected);
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    // tungstenite sends no User-Agent: none is reported.
    assert!(v["identity"].get("userAgent").is_none(), "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["connectedAt", "identity", "lastActiveAt"]);
}

#[tokio::test]
async fn get_reports_the_user_agent() {
    let (gw, backend) = start("").await;
    let mut request = gw.ws_url("/prod").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("User-Agent", "lifecycle-test/1.0".parse().unwrap());
    let (mut ws, response) = connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let id = v["connectionId"].as_str().unwrap().to_owned();
    let (status, v) = gw.get_connection(&id).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["identity"],
        serde_json::json!({"sourceIp": "127.0.0.1", "userAgent": "lifecycle-test/1.0"})
    );
    // And the DISCONNECT event carries it too.
    ws.close(None).await.unwrap();
    drain(&mut ws).await;
    let event = disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    assert_eq!(
        event["requestContext"]["identity"]["userAgent"],
        "lifecycle-test/1.0"
    );
}

#[tokio::test]
async fn last_active_at_moves_after_a_message() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let get = || async {
        let (status, v) = gw.get_connection(&id).await;
        assert_eq!(status, 200);
        v
    };
    let first = get().await;
    // Let the clock move past the millisecond of the first activity.
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    next_text(&mut ws).await;
    let second = get().await;
    assert_eq!(second["connectedAt"], first["connectedAt"]);
    let a = parse_iso(first["lastActiveAt"].as_str().unwrap());
    let b = parse_iso(second["lastActiveAt"].as_str().unwrap());
    assert!(
        b >= a + chrono::Duration::milliseconds(40),
        "lastActiveAt did not move: {a} → {b}"
    );
    // An outbound POST counts as activity too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = gw.post(&id, "push").await;
    assert_eq!(status, 200);
    next_text(&mut ws).await;
    let third = get().await;
    let c = parse_iso(third["lastActiveAt"].as_str().unwrap());
    assert!(
        c >= b + chrono::Duration::milliseconds(40),
        "lastActiveAt did not move on POST: {b} → {c}"
    );
}

#[tokio::test]
async fn stage_prefixed_and_percent_encoded_paths() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    for path in [
        format!("/prod/@connections/{id}"),
        format!("/prod/%40connections/{id}"),
        format!("/%40connections/{id}"),
    ] {
        let r = gw.request(Method::GET, &path, "").await;
        assert_eq!(r.status(), 200, "GET {path}");
        let r = gw.request(Method::POST, &path, path.clone()).await;
        assert_eq!(r.status(), 200, "POST {path}");
        assert_eq!(next_text(&mut ws).await, path);
    }
    let unknown_stage = format!("/dev/@connections/{id}");
    let (status, error_type, _) = parts(gw.request(Method::GET, &unknown_stage, "").await).await;
    assert_eq!(status, 404, "unknown stage prefix");
    assert_eq!(error_type.as_deref(), Some("NotFoundException"));
    let r = gw.request(Method::GET, "/nothing/here", "").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn bearer_auth_is_required_except_for_healthz() {
    let (gw, _backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    // Missing token.
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let (status, error_type, body) = parts(
            anonymous(&gw, method.clone(), &path)
                .body("sneaky")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403, "{method} without a token");
        assert_eq!(error_type.as_deref(), Some("ForbiddenException"));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            serde_json::json!({"message": "Forbidden"})
        );
    }
    // Wrong token.
    let (status, error_type, body) = parts(
        anonymous(&gw, Method::POST, &path)
            .bearer_auth("wrong-token-0123456789")
            .body("sneaky")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(error_type.as_deref(), Some("ForbiddenException"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"message": "Forbidden"})
    );
    // Nothing was delivered or closed.
    let (status, _) = gw.post(&id, "legit").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "legit");
    // Health needs no credentials.
    let r = anonymous(&gw, Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn auth_none_needs_no_token() {
    let backend = Backend::start().await;
    let config = config(&backend, "").replace(&base_config(), "[management]\nauth = \"none\"\n");
    assert!(config.contains("auth = \"none\""));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let path = format!("/@connections/{id}");
    let r = anonymous(&gw, Method::POST, &path)
        .body("open door")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(next_text(&mut ws).await, "open door");
    let r = anonymous(&gw, Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = anonymous(&gw, Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let close = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(frame(close).0, 1000);
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let (mut gw, backend) = start("").await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (ws, id) = gw.connect_with_id().await;
        clients.push(ws);
        ids.push(id);
    }
    let started = Instant::now();
    gw.sigterm();
    let closes = clients.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let close = expect_close(&mut ws, Duration::from_secs(4)).await;
            drain(&mut ws).await;
            frame(close)
        })
    });
    for close in futures_util::future::join_all(closes).await {
        assert_eq!(close.unwrap(), (1001, "Going away".to_owned()));
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), backend.next_event("DISCONNECT"))
            .await
            .expect("$disconnect for every client");
        assert_eq!(code_reason(&event), (1001, "Going away".to_owned()));
        seen.push(
            event["requestContext"]["connectionId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let code = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "exit code");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}, over the 5 s grace",
        started.elapsed()
    );
    backend.expect_none(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// Whether a log line mentions connection `id` in a field (its own or its span's).
fn mentions(line: &Value, id: &str) -> bool {
    line["conn"] == id
        || line["span"]["conn"] == id
        || line["path"].as_str().is_some_and(|p| p.ends_with(id))
}

#[tokio::test]
async fn logs_carry_the_connection_id_and_never_the_token() {
    let (gw, backend) = start("").await;
    let (mut ws, id) = gw.connect_with_id().await;
    let (status, _) = gw.post(&id, "logged").await;
    assert_eq!(status, 200);
    next_text(&mut ws).await;
    let r = anonymous(&gw, Method::GET, &format!("/@connections/{id}"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    ws.close(None).await.unwrap();
    drain(&mut ws).await;
    disconnect_of(&backend, &id, Duration::from_secs(5)).await;
    // Let the process print the last lines.
    let deadline = Instant::now() + Duration::from_secs(3);
    let find = |message: &str| {
        gw.logs()
            .into_iter()
            .find(|l| l["message"] == message && mentions(l, &id))
    };
    while (find("connected").is_none() || find("disconnected").is_none())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = find("connected")
        .unwrap_or_else(|| panic!("no `connected` line naming {id}:\n{}", gw.raw_logs()));
    assert_eq!(connected["span"]["conn"], id.as_str(), "{connected}");
    let disconnected = find("disconnected")
        .unwrap_or_else(|| panic!("no `disconnected` line naming {id}:\n{}", gw.raw_logs()));
    assert_eq!(disconnected["span"]["conn"], id.as_str(), "{disconnected}");
    assert_eq!(disconnected["code"], 1005, "{disconnected}");
    let management: Vec<Value> = gw
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "management call")
        .collect();
    assert!(
        management
            .iter()
            .any(|l| l["method"] == "POST" && l["status"] == 200 && mentions(l, &id)),
        "no management POST line naming {id}: {management:?}"
    );
    assert!(
        management.iter().all(|l| l["request_id"].is_string()),
        "{management:?}"
    );
    let raw = gw.raw_logs();
    assert!(
        !raw.contains(TOKEN),
        "the bearer token leaked into the logs"
    );
    assert!(
        !raw.contains("wrong-token-0123456789"),
        "a presented token leaked into the logs"
    );
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

#[test]
fn check_config_accepts_the_default() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"));
    let (code, stdout, stderr) = check_config_file(path);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_config_names_an_unknown_key() {
    let text = format!("{}\n[client]\nbogus_key = 5\n", base_config());
    let (code, stdout, stderr) = check_config(&text);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("client.bogus_key"), "{stderr}");
    assert!(!stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_config_names_a_route_to_a_missing_integration() {
    let text = format!("{}\n[routes.x]\nintegration = \"nowhere\"\n", base_config());
    let (code, _, stderr) = check_config(&text);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stderr.contains("routes.x.integration"), "{stderr}");
}

#[test]
fn check_config_names_a_bad_selection_expression() {
    let text = format!(
        "{}\n[api]\nroute_selection_expression = \"${{request.body.action\"\n",
        base_config()
    );
    let (code, _, stderr) = check_config(&text);
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(
        stderr.contains("api.route_selection_expression"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_client_that_never_reads_can_still_be_deleted() {
    let (gw, backend) = start("outbound_queue_messages = 4\noutbound_queue_bytes = 131072").await;
    let (_ws, id) = gw.connect_with_id().await;
    let chunk = "z".repeat(64 * 1024);
    let mut full = false;
    for _ in 0..2000 {
        let (status, _) = gw.post(&id, chunk.clone()).await;
        if status == 429 {
            full = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(full, "the queue never filled");
    // The session is stuck writing to a socket nobody reads; DELETE must still end it.
    let (status, _) = gw.delete_connection(&id).await;
    assert_eq!(status, 204);
    let event = disconnect_of(&backend, &id, Duration::from_secs(4)).await;
    assert_eq!(code_reason(&event).0, 1000);
}
