//! The handshake pipeline end to end through the real binary: stage paths, the upgrade
//! checks (426/405/400/426/400), hyper's header limits (431) and header deadline, the
//! `$connect` integration (accept, reject with its status, 502/504/5xx), subprotocol
//! selection, and the CONNECT event in proxy and passthrough modes.
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The RFC 6455 example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------------------
// Raw HTTP helpers: a client library refuses to send most of these requests.

/// A response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// Header names lowercased, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Sends `request` as is and reads the answer: up to the end of the head for a 101,
/// otherwise until the server closes (every rejection carries `Connection: close`).
async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    // A server that rejects early may reset before it read everything; the answer it
    // wrote first is still readable.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.starts_with(b"HTTP/1.1 101") && head_end(&buf).is_some() {
                    break;
                }
            }
        }
    }
    parse_raw(&buf)
}

fn parse_raw(buf: &[u8]) -> Raw {
    let end = head_end(buf).unwrap_or_else(|| {
        panic!(
            "no complete response head: {:?}",
            String::from_utf8_lossy(buf)
        )
    });
    let head = std::str::from_utf8(&buf[..end]).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Raw {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

/// The headers of a well-formed upgrade request.
fn std_headers() -> Vec<(String, String)> {
    [
        ("Host", "gw.test"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

/// `std_headers()` with `name` replaced by `value` (or removed when `value` is `None`).
fn headers_with(name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut h: Vec<_> = std_headers()
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .collect();
    if let Some(v) = value {
        h.push((name.to_owned(), v.to_owned()));
    }
    h
}

fn request(method: &str, path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

async fn raw_upgrade(gw: &Gateway, path: &str) -> Raw {
    raw(gw.client_addr, &request("GET", path, &std_headers())).await
}

/// Asserts `r` is a rejection with `status`, an empty body and `Connection: close`.
fn assert_rejected_empty(r: &Raw, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(r.body.is_empty(), "body should be empty: {r:?}");
    assert_eq!(r.header("content-length").unwrap_or("0"), "0", "{r:?}");
}

// ---------------------------------------------------------------------------------------
// WebSocket-client helpers.

/// Connects with extra handshake headers; returns the client, the response and the key sent.
async fn ws_connect_with(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (Client, WsResponse, String) {
    let mut req = gw.ws_url(path).into_client_request().unwrap();
    for (n, v) in headers {
        req.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let key = req.headers()["sec-websocket-key"]
        .to_str()
        .unwrap()
        .to_owned();
    let (ws, resp) = connect_async(req).await.expect("handshake");
    assert_eq!(resp.status(), 101);
    (ws, resp, key)
}

/// Asks the `whoami` route for this connection's id.
async fn whoami(ws: &mut Client) -> String {
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    v["connectionId"].as_str().unwrap().to_owned()
}

/// A config whose `$connect` route calls `url`; `extra` goes inside `[integrations.conn]`.
fn connect_config(url: &str, extra: &str) -> String {
    format!(
        "{}[api]\nid = \"testapi\"\n\n[routes.\"$connect\"]\nintegration = \"conn\"\n\n\
         [integrations.conn]\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n{WHOAMI}",
        base_config()
    )
}

/// A backend answering the `i`-th request with `answers[i]` (the last one repeats).
async fn scripted(answers: Vec<(u16, &'static str)>) -> Backend {
    let n = Arc::new(AtomicUsize::new(0));
    Backend::with(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
        (answers[i].0, answers[i].1.to_owned())
    })
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------
// Stages.

#[tokio::test]
async fn root_path_is_the_only_stage_and_others_are_404() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&connect_config(&backend.url("/connect"), "")).await;

    let mut ws = gw.connect_path("/").await;
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["stage"],
        "prod"
    );
    whoami(&mut ws).await;
    let _ws2 = gw.connect_path("/prod").await;
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["stage"],
        "prod"
    );

    for path in ["/dev", "/prod/extra", "/prodx", "/PROD"] {
        let r = raw_upgrade(&gw, path).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
    // The stage check comes before $connect: the backend never heard of those.
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn two_stages_first_is_root_and_each_is_reported() {
    let backend = Backend::start().await;
    let config = format!(
        "{}[api]\nstages = [\"prod\", \"dev\"]\n\n[routes.\"$connect\"]\nintegration = \"conn\"\n\n\
         [integrations.conn]\ntype = \"http\"\nurl = \"{}\"\n\n\
         [routes.stage]\nintegration = \"stage\"\ntwo_way = true\n\n\
         [integrations.stage]\ntype = \"mock\"\ntemplate = \"$context.stage\"\n",
        base_config(),
        backend.url("/c")
    );
    let gw = Gateway::start(&config).await;
    for (path, stage) in [("/", "prod"), ("/prod", "prod"), ("/dev", "dev")] {
        let mut ws = gw.connect_path(path).await;
        let event = backend.next_event("CONNECT").await;
        assert_eq!(event["requestContext"]["stage"], stage, "{path}");
        ws.send(Message::text(r#"{"action":"stage"}"#))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await, stage, "{path}");
    }
    for path in ["/test", "/dev/prod"] {
        assert_eq!(raw_upgrade(&gw, path).await.status, 404, "{path}");
    }
    backend.expect_none(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------
// Upgrade checks. Each runs with a $connect backend that must never be called.

async fn gateway_with_silent_connect() -> (Gateway, Backend) {
    let backend = Backend::start().await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    (gw, backend)
}

#[tokio::test]
async fn well_formed_raw_upgrade_gets_101_with_rfc_accept() {
    let (gw, backend) = gateway_with_silent_connect().await;
    let r = raw_upgrade(&gw, "/prod").await;
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("sec-websocket-accept"), Some(ACCEPT));
    assert!(
        r.header("upgrade")
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    assert!(
        r.header("connection")
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
    assert_eq!(r.header("sec-websocket-protocol"), None);
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["eventType"],
        "CONNECT"
    );
}

#[tokio::test]
async fn plain_get_gets_426_with_upgrade_header() {
    let (gw, backend) = gateway_with_silent_connect().await;
    let r = raw(
        gw.client_addr,
        b"GET /prod HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert_eq!(r.header("connection"), Some("close"));
    // Also through an ordinary HTTP client.
    let resp = reqwest::get(format!("http://{}/prod", gw.client_addr))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 426);
    // Upgrade: something other than websocket is not an upgrade either.
    let r = raw(
        gw.client_addr,
        &request("GET", "/prod", &headers_with("Upgrade", Some("h2c"))),
    )
    .await;
    assert_eq!(r.status, 426, "{r:?}");
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn non_get_upgrade_gets_405() {
    let (gw, backend) = gateway_with_silent_connect().await;
    for method in ["POST", "PUT", "DELETE"] {
        let mut headers = std_headers();
        headers.push(("Content-Length".into(), "0".into()));
        let r = raw(gw.client_addr, &request(method, "/prod", &headers)).await;
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn missing_connection_upgrade_gets_400() {
    let (gw, backend) = gateway_with_silent_connect().await;
    for value in [None, Some("keep-alive")] {
        let r = raw(
            gw.client_addr,
            &request("GET", "/prod", &headers_with("Connection", value)),
        )
        .await;
        assert_eq!(r.status, 400, "{value:?}: {r:?}");
    }
    // A list containing Upgrade is fine.
    let r = raw(
        gw.client_addr,
        &request(
            "GET",
            "/prod",
            &headers_with("Connection", Some("keep-alive, Upgrade")),
        ),
    )
    .await;
    assert_eq!(r.status, 101, "{r:?}");
    backend.next_event("CONNECT").await;
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn wrong_version_gets_426_naming_13() {
    let (gw, backend) = gateway_with_silent_connect().await;
    for value in [Some("8"), Some("12"), Some("14"), None] {
        let r = raw(
            gw.client_addr,
            &request(
                "GET",
                "/prod",
                &headers_with("Sec-WebSocket-Version", value),
            ),
        )
        .await;
        assert_eq!(r.status, 426, "{value:?}: {r:?}");
        assert_eq!(r.all("sec-websocket-version"), vec!["13"], "{value:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
    backend.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn bad_or_missing_key_gets_400() {
    let (gw, backend) = gateway_with_silent_connect().await;
    for value in [
        None,
        Some("abc"),
        Some("not base64 at all!!"),
        // base64 of 15 bytes and of 17 bytes
        Some("AAAAAAAAAAAAAAAAAAAA"),
        Some("AAAAAAAAAAAAAAAAAAAAAAA="),
    ] {
        let r = raw(
            gw.client_addr,
            &request("GET", "/prod", &headers_with("Sec-WebSocket-Key", value)),
        )
        .await;
        assert_eq!(r.status, 400, "{value:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"));
    }
    backend.expect_none(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------
// Header limits and deadline (hyper).

#[tokio::test]
async fn oversized_headers_get_431() {
    let config = format!(
        "{}[client]\nmax_header_bytes = 8192\nmax_headers = 64\n{WHOAMI}",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let big = "x".repeat(12_000);
    let mut headers = std_headers();
    headers.push(("X-Big".into(), big));
    let r = raw(gw.client_addr, &request("GET", "/prod", &headers)).await;
    assert_eq!(r.status, 431, "{r:?}");

    // Well under the limit is accepted.
    let medium = "y".repeat(3000);
    let (mut ws, _, _) = ws_connect_with(&gw, "/prod", &[("X-Medium", &medium)]).await;
    whoami(&mut ws).await;
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let config = format!("{}[client]\nmax_headers = 12\n{WHOAMI}", base_config());
    let gw = Gateway::start(&config).await;
    let mut headers = std_headers();
    for i in 0..20 {
        headers.push((format!("X-H{i}"), "v".into()));
    }
    let r = raw(gw.client_addr, &request("GET", "/prod", &headers)).await;
    assert_eq!(r.status, 431, "{r:?}");

    // 5 standard + 5 extra = 10 headers: accepted.
    let mut headers = std_headers();
    for i in 0..5 {
        headers.push((format!("X-H{i}"), "v".into()));
    }
    let r = raw(gw.client_addr, &request("GET", "/prod", &headers)).await;
    assert_eq!(r.status, 101, "{r:?}");
}

#[tokio::test]
async fn header_deadline_drops_slowloris() {
    let config = format!(
        "{}[client]\nheader_timeout_ms = 300\n{WHOAMI}",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.client_addr).await.unwrap();
    stream
        .write_all(b"GET /prod HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    // Keep trickling header lines: the deadline is for the whole head, not per byte.
    let mut received = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let closed_after = loop {
        let mut buf = [0u8; 1024];
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break started.elapsed(),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if started.elapsed() > Duration::from_secs(3) {
                    panic!("slowloris still connected after 3 s");
                }
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break started.elapsed();
                }
            }
        }
    };
    assert!(
        closed_after >= Duration::from_millis(250),
        "closed too early: {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_millis(2000),
        "closed too late: {closed_after:?}"
    );
    assert!(
        !received.starts_with(b"HTTP/1.1 101"),
        "no upgrade for a slowloris"
    );
    // A prompt client is still served.
    let (mut ws, _, _) = ws_connect_with(&gw, "/prod", &[]).await;
    whoami(&mut ws).await;
}

// ---------------------------------------------------------------------------------------
// $connect outcomes.

#[tokio::test]
async fn connect_2xx_accepts_and_registers() {
    let backend = scripted(vec![
        (200, ""),
        (204, ""),
        (200, r#"{"statusCode":200}"#),
        (200, r#"{"statusCode":201,"body":"welcome?"}"#),
        (200, "plain text body"),
    ])
    .await;
    let gw = Gateway::start(&connect_config(&backend.url("/connect"), "")).await;
    for i in 0..5 {
        let (mut ws, _, _) = ws_connect_with(&gw, "/prod", &[]).await;
        let event = backend.next_event("CONNECT").await;
        let id = whoami(&mut ws).await;
        assert_eq!(event["requestContext"]["connectionId"], id.as_str(), "#{i}");
        // The $connect body is never sent to the client; a POST is.
        let (status, body) = gw.post(&id, format!("hi {i}")).await;
        assert_eq!((status, body.as_str()), (200, ""), "#{i}");
        assert_eq!(next_text(&mut ws).await, format!("hi {i}"));
    }
}

#[tokio::test]
async fn connect_non_2xx_rejects_with_that_status() {
    let backend = scripted(vec![
        (401, ""),
        (403, "nope"),
        (301, ""),
        (404, ""),
        (429, ""),
        (200, r#"{"statusCode":403}"#),
        (200, r#"{"statusCode":401,"body":"denied"}"#),
        (200, r#"{"statusCode":"302"}"#),
    ])
    .await;
    let gw = Gateway::start(&connect_config(&backend.url("/connect"), "")).await;
    for expected in [401, 403, 301, 404, 429, 403, 401, 302] {
        let r = raw_upgrade(&gw, "/prod").await;
        assert_rejected_empty(&r, expected);
        assert_eq!(r.header("sec-websocket-accept"), None);
        let event = backend.next_event("CONNECT").await;
        assert_eq!(event["requestContext"]["routeKey"], "$connect");
    }
    // Through a real client library the handshake fails with the same status.
    let err = connect_async(gw.ws_url("/prod")).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 302),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    let logs = gw.logs();
    let rejected: Vec<_> = logs
        .iter()
        .filter(|l| l["message"] == "connect rejected by $connect")
        .collect();
    assert!(
        rejected.iter().any(|l| l["status"] == 403),
        "rejection logged with its status: {logs:?}"
    );
}

#[tokio::test]
async fn connect_backend_unreachable_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = Gateway::start(&connect_config(&format!("http://127.0.0.1:{port}/c"), "")).await;
    let r = raw_upgrade(&gw, "/prod").await;
    assert_rejected_empty(&r, 502);
    let r = raw_upgrade(&gw, "/").await;
    assert_rejected_empty(&r, 502);
}

#[tokio::test]
async fn connect_timeout_is_504() {
    let backend = Backend::slow(Duration::from_secs(3)).await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "timeout_ms = 100")).await;
    let started = Instant::now();
    let r = raw_upgrade(&gw, "/prod").await;
    let took = started.elapsed();
    assert_rejected_empty(&r, 504);
    assert!(
        took >= Duration::from_millis(90),
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "timeout not enforced: {took:?}"
    );
    // The backend was called (and then abandoned).
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["routeKey"],
        "$connect"
    );
}

#[tokio::test]
async fn connect_backend_5xx_is_that_status_and_malformed_is_502() {
    let backend = scripted(vec![
        (500, "boom"),
        (503, ""),
        (200, r#"{"statusCode":200,"extra":1}"#),
        (200, r#"{"statusCode":"abc"}"#),
        (200, r#"{"statusCode":500}"#),
    ])
    .await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    for expected in [500, 503, 502, 502, 500] {
        let r = raw_upgrade(&gw, "/prod").await;
        assert_rejected_empty(&r, expected);
        backend.next_event("CONNECT").await;
    }
}

#[tokio::test]
async fn connect_mock_status_decides() {
    let config = format!(
        "{}[routes.\"$connect\"]\nintegration = \"deny\"\n\n\
         [integrations.deny]\ntype = \"mock\"\nstatus = 403\ntemplate = \"go away\"\n{WHOAMI}",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    assert_rejected_empty(&raw_upgrade(&gw, "/prod").await, 403);

    let config = format!(
        "{}[routes.\"$connect\"]\nintegration = \"allow\"\n\n\
         [integrations.allow]\ntype = \"mock\"\nstatus = 200\ntemplate = \"\"\n{WHOAMI}",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let (mut ws, _, _) = ws_connect_with(&gw, "/prod", &[]).await;
    whoami(&mut ws).await;
}

#[tokio::test]
async fn rejected_connect_registers_nothing_and_fires_no_disconnect() {
    let backend = Backend::with(|r| {
        let event = r.json();
        if event["requestContext"]["eventType"] == "CONNECT" {
            (403, String::new())
        } else {
            (200, String::new())
        }
    })
    .await;
    let config = format!(
        "{}\n[routes.\"$disconnect\"]\nintegration = \"conn\"\n",
        connect_config(&backend.url("/c"), "")
    );
    let gw = Gateway::start(&config).await;
    assert_rejected_empty(&raw_upgrade(&gw, "/prod").await, 403);
    let event = backend.next_event("CONNECT").await;
    let id = event["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let (status, body) = gw.post(&id, "anyone?").await;
    assert_eq!((status, body.as_str()), (410, ""));
    let (status, _) = gw.get_connection(&id).await;
    assert_eq!(status, 410);
    // No $disconnect for a connection that never existed.
    backend.expect_none(Duration::from_millis(500)).await;
}

// ---------------------------------------------------------------------------------------
// Subprotocols and response headers.

/// Header names a 101 may carry.
fn assert_only_handshake_headers(resp: &WsResponse) {
    for name in resp.headers().keys() {
        assert!(
            [
                "connection",
                "upgrade",
                "sec-websocket-accept",
                "sec-websocket-protocol",
                "date"
            ]
            .contains(&name.as_str()),
            "unexpected header {name} in the 101: {:?}",
            resp.headers()
        );
    }
}

#[tokio::test]
async fn subprotocol_from_proxy_headers_is_the_only_header_copied() {
    let backend = Backend::with(|_| {
        (
            200,
            r#"{"statusCode":200,"headers":{"Sec-WebSocket-Protocol":"myprotocol","X-Proxy":"yes","Set-Cookie":"a=b"},"multiValueHeaders":{"X-Multi":["1","2"]}}"#
                .to_owned(),
        )
    })
    .await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    let (mut ws, resp, _) = ws_connect_with(
        &gw,
        "/prod",
        &[("Sec-WebSocket-Protocol", "chat1, myprotocol")],
    )
    .await;
    let protocols: Vec<_> = resp
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .collect();
    assert_eq!(protocols, vec!["myprotocol"]);
    assert_only_handshake_headers(&resp);
    // The backend saw what the client offered.
    let event = backend.next_event("CONNECT").await;
    assert_eq!(
        event["headers"]["Sec-WebSocket-Protocol"],
        "chat1, myprotocol"
    );
    whoami(&mut ws).await;
}

#[tokio::test]
async fn subprotocol_from_plain_http_response_header_passes_through() {
    let backend = Backend::with_headers(|_| {
        (
            200,
            vec![
                ("Sec-WebSocket-Protocol".into(), "myprotocol".into()),
                ("X-Backend".into(), "yes".into()),
                ("Set-Cookie".into(), "session=1".into()),
                ("Access-Control-Allow-Origin".into(), "*".into()),
            ],
            String::new(),
        )
    })
    .await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    let (mut ws, resp, _) = ws_connect_with(
        &gw,
        "/prod",
        &[("Sec-WebSocket-Protocol", "chat1, myprotocol")],
    )
    .await;
    let protocols: Vec<_> = resp
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .collect();
    assert_eq!(protocols, vec!["myprotocol"]);
    assert_only_handshake_headers(&resp);
    whoami(&mut ws).await;
}

#[tokio::test]
async fn no_subprotocol_chosen_means_none_in_101() {
    let backend =
        Backend::with_headers(|_| (200, vec![("X-Backend".into(), "yes".into())], String::new()))
            .await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    let mut headers = std_headers();
    headers.push(("Sec-WebSocket-Protocol".into(), "chat1, myprotocol".into()));
    let r = raw(gw.client_addr, &request("GET", "/prod", &headers)).await;
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("sec-websocket-protocol"), None);
    assert_eq!(r.header("x-backend"), None);
    assert_eq!(r.header("sec-websocket-accept"), Some(ACCEPT));
}

// ---------------------------------------------------------------------------------------
// The CONNECT event.

#[tokio::test]
async fn connect_proxy_event_field_by_field() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&connect_config(&backend.url("/connect/path"), "")).await;
    let before = now_ms();
    let (mut ws, _, key) = ws_connect_with(
        &gw,
        "/prod?token=abc&tag=a&tag=b&enc=a%20b%2B",
        &[
            ("User-Agent", "handshake-test/1.0"),
            ("X-Custom-Header", "custom value"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Origin", "https://example.test"),
            ("Cookie", "c=1"),
        ],
    )
    .await;
    let after = now_ms();
    let received = backend.next().await;
    assert_eq!(received.path, "/connect/path");
    assert_eq!(
        received.headers.get("content-type").unwrap(),
        "application/json"
    );
    let event = received.json();
    let host = gw.client_addr.to_string();

    // Top level: exactly these keys, no body.
    let mut keys: Vec<_> = event.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "headers",
            "isBase64Encoded",
            "multiValueHeaders",
            "multiValueQueryStringParameters",
            "queryStringParameters",
            "requestContext"
        ]
    );
    assert_eq!(event["isBase64Encoded"], false);

    // Headers: title-cased, all client headers, no Connection/Upgrade.
    let headers = event["headers"].as_object().unwrap();
    assert_eq!(headers["Host"], host.as_str());
    assert_eq!(headers["User-Agent"], "handshake-test/1.0");
    assert_eq!(headers["X-Custom-Header"], "custom value");
    assert_eq!(headers["X-Multi"], "two");
    assert_eq!(headers["Origin"], "https://example.test");
    assert_eq!(headers["Cookie"], "c=1");
    assert_eq!(headers["Sec-WebSocket-Version"], "13");
    assert_eq!(headers["Sec-WebSocket-Key"], key.as_str());
    for name in headers.keys() {
        assert!(
            !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("upgrade"),
            "{name} must not be in the CONNECT headers"
        );
        assert!(
            name.starts_with(|c: char| c.is_ascii_uppercase()),
            "{name} is not title-cased"
        );
    }
    let multi = event["multiValueHeaders"].as_object().unwrap();
    assert_eq!(multi["X-Multi"], serde_json::json!(["one", "two"]));
    assert_eq!(multi["Host"], serde_json::json!([host]));
    assert_eq!(multi["Sec-WebSocket-Key"], serde_json::json!([key]));
    let mut single_keys: Vec<_> = headers.keys().collect();
    let mut multi_keys: Vec<_> = multi.keys().collect();
    single_keys.sort();
    multi_keys.sort();
    assert_eq!(single_keys, multi_keys);

    // Query string: last value wins in the single map, all values in the multi map.
    assert_eq!(
        event["queryStringParameters"],
        serde_json::json!({"token": "abc", "tag": "b", "enc": "a b+"})
    );
    assert_eq!(
        event["multiValueQueryStringParameters"],
        serde_json::json!({"token": ["abc"], "tag": ["a", "b"], "enc": ["a b+"]})
    );

    // requestContext.
    let rc = &event["requestContext"];
    assert_eq!(rc["routeKey"], "$connect");
    assert_eq!(rc["eventType"], "CONNECT");
    assert_eq!(rc["messageDirection"], "IN");
    assert_eq!(rc["stage"], "prod");
    assert_eq!(rc["domainName"], host.as_str());
    assert_eq!(rc["apiId"], "testapi");
    assert_eq!(rc["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(rc["identity"]["userAgent"], "handshake-test/1.0");
    assert!(rc.get("messageId").is_none_or(Value::is_null));
    assert!(rc.get("disconnectStatusCode").is_none_or(Value::is_null));
    let request_id = rc["requestId"].as_str().unwrap();
    assert!(!request_id.is_empty());
    assert_eq!(rc["extendedRequestId"], request_id);
    let connected_at = rc["connectedAt"].as_i64().unwrap();
    let epoch = rc["requestTimeEpoch"].as_i64().unwrap();
    assert!(
        (before - 5..=after + 5).contains(&connected_at),
        "connectedAt {connected_at} not in [{before}, {after}]"
    );
    assert!(
        (connected_at..=after + 5).contains(&epoch),
        "requestTimeEpoch {epoch} vs connectedAt {connected_at}"
    );
    let clf = rc["requestTime"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_str(clf, "%d/%b/%Y:%H:%M:%S %z")
        .unwrap_or_else(|e| panic!("requestTime {clf:?} is not CLF: {e}"));
    assert!(clf.ends_with(" +0000"), "{clf}");
    assert_eq!(parsed.timestamp(), epoch / 1000, "{clf} vs {epoch}");

    // The connectionId is the connection's id: whoami and the management API agree.
    let conn_id = rc["connectionId"].as_str().unwrap();
    assert_eq!(conn_id.len(), 16);
    assert_eq!(whoami(&mut ws).await, conn_id);
    let (status, _) = gw.post(conn_id, "to you").await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "to you");
    let (_, info) = gw.get_connection(conn_id).await;
    assert_eq!(info["identity"]["userAgent"], "handshake-test/1.0");
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
}

#[tokio::test]
async fn connect_event_without_query_or_user_agent_omits_them() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&connect_config(&backend.url("/c"), "")).await;
    // Raw: no User-Agent, no query.
    let r = raw_upgrade(&gw, "/prod").await;
    assert_eq!(r.status, 101);
    let event = backend.next_event("CONNECT").await;
    assert!(event.get("queryStringParameters").is_none(), "{event}");
    assert!(
        event.get("multiValueQueryStringParameters").is_none(),
        "{event}"
    );
    assert!(event.get("body").is_none(), "{event}");
    assert!(event["headers"].get("User-Agent").is_none());
    assert_eq!(
        event["requestContext"]["identity"],
        serde_json::json!({"sourceIp": "127.0.0.1"})
    );
    assert_eq!(event["requestContext"]["domainName"], "gw.test");
    assert_eq!(event["headers"]["Host"], "gw.test");
    // The exact header set the raw request sent, minus Connection and Upgrade, plus the
    // four AWS adds (tests/aws_edge.rs checks their values).
    let mut names: Vec<_> = event["headers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Host",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "X-Amzn-Trace-Id",
            "X-Forwarded-For",
            "X-Forwarded-Port",
            "X-Forwarded-Proto"
        ]
    );
    assert_eq!(event["headers"]["Sec-WebSocket-Key"], KEY);
}

#[tokio::test]
async fn connect_passthrough_mode_sends_headers_and_empty_body() {
    let backend = scripted(vec![(200, ""), (401, "")]).await;
    let gw = Gateway::start(&connect_config(
        &backend.url("/pt"),
        "mode = \"passthrough\"",
    ))
    .await;
    let (mut ws, _, _) = ws_connect_with(&gw, "/prod?x=1", &[("User-Agent", "pt/1")]).await;
    let received = backend.next().await;
    assert_eq!(received.path, "/pt");
    assert!(
        received.body.is_empty(),
        "passthrough CONNECT body: {:?}",
        received.body
    );
    let h = |name: &str| {
        received
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}: {:?}", received.headers))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let id = h("x-switchboard-connection-id");
    assert_eq!(id.len(), 16);
    assert_eq!(h("x-switchboard-route-key"), "$connect");
    assert_eq!(h("x-switchboard-event-type"), "CONNECT");
    assert_eq!(h("x-switchboard-stage"), "prod");
    assert!(!h("x-switchboard-request-id").is_empty());
    assert!(
        received
            .headers
            .get("x-switchboard-disconnect-status-code")
            .is_none()
    );
    assert!(
        received
            .headers
            .get("x-switchboard-disconnect-reason")
            .is_none()
    );
    assert!(
        received
            .headers
            .get("x-switchboard-is-base64-encoded")
            .is_none()
    );
    assert_eq!(whoami(&mut ws).await, id);

    // A non-2xx passthrough answer rejects too.
    assert_rejected_empty(&raw_upgrade(&gw, "/prod").await, 401);
    assert_eq!(
        backend.next().await.headers["x-switchboard-event-type"],
        "CONNECT"
    );
}
