//! Running an AWS WebSocket app unchanged, through the real binary: the headers AWS adds
//! to the CONNECT and authorizer events (`X-Forwarded-For/-Port/-Proto`,
//! `X-Amzn-Trace-Id`), `identity.sourceIp` behind a trusted proxy, W3C `traceparent` on
//! every integration call, `client.public_host` as `domainName`, and `@connections` on
//! the client listener (`client.callbacks`) with the management API's authentication.
mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

/// `$connect`, `$default` and `$disconnect` all call `backend` (proxy mode); `client`
/// goes into `[client]`.
fn config(backend: &Backend, client: &str) -> String {
    format!(
        "{}[client]\n{client}\n\
         [routes.\"$connect\"]\nintegration = \"b\"\n\
         [routes.\"$default\"]\nintegration = \"b\"\n\
         [routes.\"$disconnect\"]\nintegration = \"b\"\n\
         [integrations.b]\ntype = \"http\"\nurl = \"{}\"\n{WHOAMI}",
        base_config(),
        backend.url("/events")
    )
}

/// Connects to `/prod` with extra handshake headers.
async fn connect_with(gw: &Gateway, headers: &[(&str, &str)]) -> Client {
    let mut request = gw.ws_url("/prod").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let (ws, response) = connect_async(request).await.expect("connect");
    assert_eq!(response.status(), 101);
    ws
}

/// `(trace id, span id)` of a request's `traceparent`, checking its shape.
fn traceparent(received: &Received) -> (String, String) {
    let value = received
        .headers
        .get("traceparent")
        .unwrap_or_else(|| panic!("no traceparent on {:?}", received.headers))
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    assert_eq!(parts[1].len(), 32, "{value}");
    assert_eq!(parts[2].len(), 16, "{value}");
    assert_eq!(parts[3], "01", "{value}");
    assert!(
        parts[1..3].iter().all(|p| p
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))),
        "{value}"
    );
    (parts[1].to_owned(), parts[2].to_owned())
}

fn header<'a>(event: &'a Value, name: &str) -> &'a str {
    event["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {}", event["headers"]))
}

/// `Root=1-<8 hex>-<24 hex>`.
fn is_amzn_trace_id(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("Root=1-") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 2
        && parts[0].len() == 8
        && parts[1].len() == 24
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test]
async fn connect_event_carries_the_headers_aws_adds_and_traceparent_reaches_every_call() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, "")).await;
    let mut ws = gw.connect().await;

    let connect = backend.next().await;
    let event = connect.json();
    assert_eq!(event["requestContext"]["eventType"], "CONNECT");
    assert_eq!(header(&event, "X-Forwarded-For"), "127.0.0.1");
    assert_eq!(
        header(&event, "X-Forwarded-Port"),
        gw.client_addr.port().to_string()
    );
    assert_eq!(header(&event, "X-Forwarded-Proto"), "http");
    let amzn = header(&event, "X-Amzn-Trace-Id");
    assert!(is_amzn_trace_id(amzn), "{amzn}");
    for name in [
        "X-Forwarded-For",
        "X-Forwarded-Port",
        "X-Forwarded-Proto",
        "X-Amzn-Trace-Id",
    ] {
        assert_eq!(
            event["multiValueHeaders"][name],
            json!([header(&event, name)]),
            "{name}"
        );
    }
    assert!(event["headers"].get("Connection").is_none());
    assert!(event["headers"].get("Upgrade").is_none());
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(
        event["requestContext"]["domainName"],
        gw.client_addr.to_string(),
        "without public_host: the Host header"
    );
    let (trace, connect_span) = traceparent(&connect);

    ws.send(Message::text(r#"{"action":"nothing-matches"}"#))
        .await
        .unwrap();
    let message = backend.next().await;
    assert_eq!(message.json()["requestContext"]["eventType"], "MESSAGE");
    let (message_trace, message_span) = traceparent(&message);
    assert_eq!(message_trace, trace, "one trace id per connection");
    assert_ne!(message_span, connect_span, "a fresh span id per call");

    ws.close(None).await.unwrap();
    let disconnect = backend.next().await;
    assert_eq!(
        disconnect.json()["requestContext"]["eventType"],
        "DISCONNECT"
    );
    assert_eq!(traceparent(&disconnect).0, trace);

    // Another connection, another trace.
    let _ws2 = gw.connect().await;
    let other = backend.next().await;
    assert_ne!(traceparent(&other).0, trace);
    assert_ne!(header(&other.json(), "X-Amzn-Trace-Id"), amzn);
}

#[tokio::test]
async fn the_clients_traceparent_and_amzn_trace_id_are_kept() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, "")).await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_parent = format!("00-{client_trace}-00f067aa0ba902b7-01");
    let amzn = "Root=1-6731ebfc-0123456789abcdef01234567";
    let mut ws = connect_with(
        &gw,
        &[("traceparent", &client_parent), ("X-Amzn-Trace-Id", amzn)],
    )
    .await;
    let connect = backend.next().await;
    let (trace, span) = traceparent(&connect);
    assert_eq!(trace, client_trace);
    assert_ne!(span, "00f067aa0ba902b7");
    let event = connect.json();
    assert_eq!(header(&event, "X-Amzn-Trace-Id"), amzn);
    assert_eq!(
        header(&event, "Traceparent"),
        client_parent,
        "a client header"
    );
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(traceparent(&backend.next().await).0, client_trace);

    // An invalid traceparent starts a fresh trace.
    let _ws = connect_with(&gw, &[("traceparent", "00-zz-yy-01")]).await;
    let (fresh, _) = traceparent(&backend.next().await);
    assert_ne!(fresh, client_trace);
}

#[tokio::test]
async fn behind_a_trusted_proxy_source_ip_is_the_real_client() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, "trusted_proxies = [\"127.0.0.1\"]")).await;
    let mut ws = connect_with(
        &gw,
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
        ],
    )
    .await;
    let event = backend.next().await.json();
    assert_eq!(
        event["requestContext"]["identity"]["sourceIp"],
        "203.0.113.7"
    );
    assert_eq!(header(&event, "X-Forwarded-For"), "203.0.113.7, 127.0.0.1");
    assert_eq!(header(&event, "X-Forwarded-Proto"), "https");
    assert_eq!(header(&event, "X-Forwarded-Port"), "443");
    ws.send(Message::text("hello")).await.unwrap();
    let message = backend.next().await.json();
    assert_eq!(
        message["requestContext"]["identity"]["sourceIp"], "203.0.113.7",
        "every event of the connection"
    );
}

#[tokio::test]
async fn without_trust_forwarded_headers_change_nothing() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, "trusted_proxies = [\"10.0.0.0/8\"]")).await;
    let _ws = connect_with(
        &gw,
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
        ],
    )
    .await;
    let event = backend.next().await.json();
    assert_eq!(event["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(header(&event, "X-Forwarded-For"), "203.0.113.7, 127.0.0.1");
    assert_eq!(header(&event, "X-Forwarded-Proto"), "http");
    assert_eq!(
        header(&event, "X-Forwarded-Port"),
        gw.client_addr.port().to_string()
    );
}

#[tokio::test]
async fn the_authorizer_event_carries_them_too() {
    let authorizer = Backend::with(|_| {
        (
            200,
            json!({"isAuthorized": true, "context": {"via": "simple"}}).to_string(),
        )
    })
    .await;
    let backend = Backend::start().await;
    let config = format!(
        "{}[auth]\nauthorizer = \"http\"\n[auth.http]\nurl = \"{}\"\ntimeout_ms = 1000\n",
        config(&backend, "trusted_proxies = [\"127.0.0.1\"]"),
        authorizer.url("/authorize")
    );
    let gw = Gateway::start(&config).await;
    let _ws = connect_with(
        &gw,
        &[
            ("Authorization", "Bearer t"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    )
    .await;
    let authorized = authorizer.next().await;
    let event = authorized.json();
    assert_eq!(event["type"], "REQUEST");
    assert_eq!(header(&event, "X-Forwarded-For"), "203.0.113.7, 127.0.0.1");
    assert_eq!(
        header(&event, "X-Forwarded-Port"),
        gw.client_addr.port().to_string()
    );
    assert_eq!(header(&event, "X-Forwarded-Proto"), "http");
    let amzn = header(&event, "X-Amzn-Trace-Id").to_owned();
    assert!(is_amzn_trace_id(&amzn), "{amzn}");
    assert_eq!(
        event["requestContext"]["identity"]["sourceIp"],
        "203.0.113.7"
    );
    // The authorizer event keeps what AWS's has on top of the CONNECT event's headers.
    assert_eq!(header(&event, "Upgrade"), "websocket");

    let connect = backend.next().await;
    let connect_event = connect.json();
    assert_eq!(
        header(&connect_event, "X-Amzn-Trace-Id"),
        amzn,
        "one presented set for both events"
    );
    assert_eq!(traceparent(&authorized).0, traceparent(&connect).0);
}

#[tokio::test]
async fn public_host_is_the_domain_name() {
    let backend = Backend::start().await;
    let gw = Gateway::start(&config(&backend, "public_host = \"ws.example.com\"")).await;
    let mut ws = gw.connect().await;
    let event = backend.next().await.json();
    assert_eq!(event["requestContext"]["domainName"], "ws.example.com");
    assert_eq!(
        header(&event, "Host"),
        gw.client_addr.to_string(),
        "the Host header stays what the client sent"
    );
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        backend.next().await.json()["requestContext"]["domainName"],
        "ws.example.com"
    );
    ws.close(None).await.unwrap();
    let disconnect = backend.next().await.json();
    assert_eq!(disconnect["requestContext"]["domainName"], "ws.example.com");
}

// ---------------------------------------------------------------------------------------
// @connections on the client listener

fn callbacks_config(on: bool) -> String {
    format!("{}[client]\ncallbacks = {on}\n{WHOAMI}", base_config())
}

fn client_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.client_addr)
}

#[tokio::test]
async fn callbacks_on_the_client_listener_need_the_management_credentials() {
    let gw = Gateway::start(&callbacks_config(true)).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let http = reqwest::Client::new();

    // As AWS handlers call it: https://{domainName}/{stage}/@connections/{id}.
    let r = http
        .post(client_url(&gw, &format!("/prod/@connections/{id}")))
        .bearer_auth(TOKEN)
        .body("hello from a callback")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-amzn-requestid"));
    assert_eq!(next_text(&mut ws).await, "hello from a callback");

    // The SDK form, %40 and all, on the same keep-alive connection.
    let r = http
        .post(client_url(&gw, &format!("/prod/%40connections/{id}")))
        .bearer_auth(TOKEN)
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(next_text(&mut ws).await, "again");

    let r = http
        .get(client_url(&gw, &format!("/prod/@connections/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let described: Value = r.json().await.unwrap();
    assert_eq!(described["identity"]["sourceIp"], "127.0.0.1");

    // Without credentials, or with a wrong token: what the management API answers.
    for token in [None, Some("wrong-token-0123456789")] {
        let mut on_client = http
            .post(client_url(&gw, &format!("/prod/@connections/{id}")))
            .body("nope");
        let mut on_management = http
            .post(gw.management_url(&format!("/prod/@connections/{id}")))
            .body("nope");
        if let Some(token) = token {
            on_client = on_client.bearer_auth(token);
            on_management = on_management.bearer_auth(token);
        }
        let on_client = on_client.send().await.unwrap();
        let on_management = on_management.send().await.unwrap();
        assert_eq!(on_client.status(), 403, "{token:?}");
        assert_eq!(on_client.status(), on_management.status(), "{token:?}");
        assert_eq!(
            on_client.headers().get("x-amzn-errortype"),
            on_management.headers().get("x-amzn-errortype"),
            "{token:?}"
        );
        assert_eq!(
            on_client.text().await.unwrap(),
            on_management.text().await.unwrap()
        );
    }
    expect_silence(&mut ws, Duration::from_millis(200)).await;

    // Only @connections/{id} under a stage; the rest of the management API is not here.
    for (method, path) in [
        (reqwest::Method::GET, "/metrics".to_owned()),
        (reqwest::Method::POST, "/admin/drain".to_owned()),
        (reqwest::Method::GET, "/healthz".to_owned()),
        (reqwest::Method::GET, "/prod/@connections".to_owned()),
        (reqwest::Method::POST, "/prod/@broadcast".to_owned()),
        (reqwest::Method::POST, "/prod/@groups/lobby".to_owned()),
        (reqwest::Method::POST, format!("/@connections/{id}")),
    ] {
        let r = http
            .request(method.clone(), client_url(&gw, &path))
            .bearer_auth(TOKEN)
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 404 | 426),
            "{method} {path}: {}",
            r.status()
        );
    }
    expect_silence(&mut ws, Duration::from_millis(200)).await;

    // The WebSocket endpoint works as before.
    let (_ws2, _) = gw.connect_with_id().await;

    let r = http
        .delete(client_url(&gw, &format!("/prod/@connections/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let close = expect_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
}

/// A SigV4-only management API: an AWS SDK signing for the client listener's host is let
/// in there; a tampered signature is refused with the SigV4 error.
#[tokio::test]
async fn sigv4_callbacks_on_the_client_listener() {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    const AKID: &str = "AKIDSWITCHBOARDEDGE";
    const SECRET: &str = "edge+secret/Key0123456789abcdefEXAMPLE";
    let config = format!(
        "[management]\nauth = \"sigv4\"\n[management.sigv4]\nregion = \"us-east-1\"\n\
         access_keys = [\"{AKID}:{SECRET}\"]\n[client]\ncallbacks = true\n{WHOAMI}"
    );
    let gw = Gateway::start(&config).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(r#"{"action":"whoami"}"#))
        .await
        .unwrap();
    let id = serde_json::from_str::<Value>(&next_text(&mut ws).await).unwrap()["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = client_url(&gw, &format!("/prod/%40connections/{id}"));
    let body = b"signed hello";
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let request =
        SignableRequest::new("POST", &url, std::iter::empty(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let signed: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let http = reqwest::Client::new();
    let send = |tamper: bool| {
        let mut request = http.post(&url).body(body.to_vec());
        for (name, value) in &signed {
            let value = if tamper && name == "authorization" {
                value.replace("Signature=", "Signature=0")
            } else {
                value.clone()
            };
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(send(false).await.unwrap().status(), 200);
    assert_eq!(next_text(&mut ws).await, "signed hello");
    let refused = send(true).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().contains_key("x-amzn-errortype"));
    let unsigned = http.post(&url).body("x").send().await.unwrap();
    assert_eq!(unsigned.status(), 403);
    expect_silence(&mut ws, Duration::from_millis(200)).await;
}

/// A backend's keep-alive connection outlives the handshake deadline gracefully: a call
/// whose body is still arriving when it passes is answered, then the connection closes.
#[tokio::test]
async fn a_callback_in_flight_at_the_handshake_deadline_is_answered() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let config = format!(
        "{}[client]\ncallbacks = true\nhandshake_timeout_ms = 300\n{WHOAMI}",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let mut tcp = tokio::net::TcpStream::connect(gw.client_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /prod/@connections/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 5\r\n\r\n",
        gw.client_addr
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tcp.write_all(b"late!").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(next_text(&mut ws).await, "late!");
}

#[tokio::test]
async fn callbacks_are_off_by_default() {
    let gw = Gateway::start(&callbacks_config(false)).await;
    let (_ws, id) = gw.connect_with_id().await;
    let r = reqwest::Client::new()
        .post(client_url(&gw, &format!("/prod/@connections/{id}")))
        .bearer_auth(TOKEN)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no stage at this path, as before");
}

#[tokio::test]
async fn callbacks_are_refused_with_an_unauthenticated_management_api() {
    let (code, _, stderr) =
        check_config("[client]\ncallbacks = true\n[management]\nauth = \"none\"\n");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("client.callbacks"), "{stderr}");

    let (code, _, stderr) = check_config(
        "[client]\ntrusted_proxies = [\"lb.internal\"]\n[management]\nauth = \"none\"\n",
    );
    assert_eq!(code, Some(64));
    assert!(stderr.contains("client.trusted_proxies"), "{stderr}");
}
