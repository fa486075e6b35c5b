//! The throttles of `[limits]` through the real listeners: handshakes over a limit get
//! 429, messages over a limit get AWS's `Too Many Requests` frame (and, sustained, close
//! 1008 with `$disconnect` told so), management calls over a limit get 429
//! `LimitExceededException`, and the per-node cap on integration calls pauses reading.
//!
//! Rates are slow (0.1/s) so no token refills while a test runs: the counts are exact.
//! The in-flight cap waits on a slow backend, so it runs in-process on paused time.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The echo route on `$default`, an `echo` route key, `whoami`, and `extra`.
fn config(extra: &str) -> String {
    format!(
        "{}{WHOAMI}[routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n\
         [routes.echo]\nintegration = \"echo\"\ntwo_way = true\n\
         [integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n{extra}",
        base_config()
    )
}

/// Sends `text` and returns the reply: the echo, or `"THROTTLED"` for the
/// `Too Many Requests` frame (whose shape is checked).
async fn send(ws: &mut Client, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    let reply = next_text(ws).await;
    match serde_json::from_str::<Value>(&reply) {
        Ok(v) if v["message"] == "Too Many Requests" => {
            assert_eq!(
                v["connectionId"].as_str().map(str::len),
                Some(16),
                "{reply}"
            );
            assert_eq!(v["requestId"].as_str().map(str::len), Some(16), "{reply}");
            "THROTTLED".to_owned()
        }
        _ => reply,
    }
}

/// Connects with an `x-api-key` header.
async fn connect_with_key(gw: &Gateway, key: &str) -> Client {
    let mut request = gw.ws_url("/prod").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    connect_async(request).await.expect("connect").0
}

/// The status, body and headers of a failed upgrade.
async fn refused(gw: &Gateway) -> (u16, String, Option<String>) {
    match connect_async(gw.ws_url("/prod")).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn new_connections_over_the_rate_get_429() {
    let gw = Gateway::start(&config(
        "[limits]\nnew_connections = { rate = 0.1, burst = 3 }\n",
    ))
    .await;
    let _open: Vec<Client> = futures_util::future::join_all((0..3).map(|_| gw.connect())).await;
    let (status, body, retry_after) = refused(&gw).await;
    assert_eq!(status, 429);
    assert_eq!(body, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(retry_after.as_deref(), Some("1"));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !gw
        .logs()
        .into_iter()
        .any(|l| l["message"] == "connection throttled" && l["limit"] == "limits.new_connections")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no throttle log line: {}",
            gw.raw_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_refused_by_connect_frees_its_slot() {
    let extra = "[limits]\nmax_connections = 1\n[routes.\"$connect\"]\nintegration = \"deny\"\n\
                 [integrations.deny]\ntype = \"mock\"\nstatus = 403\n";
    let gw = Gateway::start(&config(extra)).await;
    // Every attempt holds the one slot while $connect runs, then frees it: all get 403,
    // none 429.
    for _ in 0..5 {
        assert_eq!(refused(&gw).await.0, 403);
    }
}

#[tokio::test]
async fn max_connections_refuses_the_next_and_frees_on_close() {
    let gw = Gateway::start(&config("[limits]\nmax_connections = 2\n")).await;
    let a = gw.connect().await;
    let mut b = gw.connect().await;
    assert_eq!(refused(&gw).await.0, 429);
    assert_eq!(send(&mut b, "b").await, "b");
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut c = loop {
        if let Ok((ws, _)) = connect_async(gw.ws_url("/prod")).await {
            break ws;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(send(&mut c, "c").await, "c");
}

#[tokio::test]
async fn per_connection_limit_throttles_only_that_connection() {
    let gw = Gateway::start(&config(
        "[limits]\nconnection_messages = { rate = 0.1, burst = 2 }\n",
    ))
    .await;
    let mut a = gw.connect().await;
    let mut b = gw.connect().await;
    assert_eq!(send(&mut a, "1").await, "1");
    assert_eq!(send(&mut a, "2").await, "2");
    assert_eq!(send(&mut a, "3").await, "THROTTLED");
    assert_eq!(send(&mut a, "4").await, "THROTTLED");
    assert_eq!(send(&mut b, "1").await, "1");
}

#[tokio::test]
async fn gateway_wide_limit_spans_connections() {
    let gw = Gateway::start(&config("[limits]\nmessages = { rate = 0.1, burst = 3 }\n")).await;
    let mut a = gw.connect().await;
    let mut b = gw.connect().await;
    assert_eq!(send(&mut a, "a1").await, "a1");
    assert_eq!(send(&mut b, "b1").await, "b1");
    assert_eq!(send(&mut a, "a2").await, "a2");
    assert_eq!(send(&mut b, "b2").await, "THROTTLED");
    assert_eq!(send(&mut a, "a3").await, "THROTTLED");
}

#[tokio::test]
async fn route_limits_apply_per_route() {
    let extra = "[limits]\nroute_messages = { rate = 0.1, burst = 2 }\n\
                 [limits.routes.echo]\nrate = 0.1\nburst = 1\n";
    let gw = Gateway::start(&config(extra)).await;
    let mut a = gw.connect().await;
    let mut b = gw.connect().await;
    let echo = r#"{"action":"echo"}"#;
    assert_eq!(send(&mut a, echo).await, echo);
    // The route's bucket is shared by every connection.
    assert_eq!(send(&mut b, echo).await, "THROTTLED");
    // $default has its own bucket at route_messages.
    assert_eq!(send(&mut b, "x").await, "x");
    assert_eq!(send(&mut a, "y").await, "y");
    assert_eq!(send(&mut a, "z").await, "THROTTLED");
}

#[tokio::test]
async fn api_key_limit_is_shared_by_connections_with_the_key() {
    let gw = Gateway::start(&config(
        "[limits]\napi_key_messages = { rate = 0.1, burst = 2 }\n",
    ))
    .await;
    let mut a = connect_with_key(&gw, "key-one").await;
    let mut b = connect_with_key(&gw, "key-one").await;
    let mut c = connect_with_key(&gw, "key-two").await;
    let mut none = gw.connect().await;
    assert_eq!(send(&mut a, "a").await, "a");
    assert_eq!(send(&mut b, "b").await, "b");
    assert_eq!(send(&mut b, "b").await, "THROTTLED");
    assert_eq!(send(&mut a, "a").await, "THROTTLED");
    assert_eq!(send(&mut c, "c").await, "c");
    for _ in 0..5 {
        assert_eq!(send(&mut none, "n").await, "n");
    }
}

#[tokio::test]
async fn sustained_abuse_closes_1008_and_disconnect_reports_it() {
    let backend = Backend::start().await;
    let extra = format!(
        "[limits]\nconnection_messages = {{ rate = 0.1, burst = 1 }}\nclose_after_throttled = 3\n\
         [routes.\"$disconnect\"]\nintegration = \"hook\"\n[integrations.hook]\ntype = \"http\"\nurl = \"{}\"\n",
        backend.url("/hook")
    );
    let gw = Gateway::start(&config(&extra)).await;
    let mut ws = gw.connect().await;
    assert_eq!(send(&mut ws, "1").await, "1");
    assert_eq!(send(&mut ws, "2").await, "THROTTLED");
    assert_eq!(send(&mut ws, "3").await, "THROTTLED");
    ws.send(Message::text("4")).await.unwrap();
    let close = expect_close(&mut ws, Duration::from_secs(5))
        .await
        .expect("a close code");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "Too many requests");
    let event = backend.next_event("DISCONNECT").await;
    assert_eq!(event["requestContext"]["disconnectStatusCode"], 1008);
    assert_eq!(
        event["requestContext"]["disconnectReason"],
        "Too many requests"
    );
}

#[tokio::test]
async fn management_calls_over_the_limit_get_429_limit_exceeded() {
    let other_token = "other-token-0123456789";
    let extra = "[limits]\nmanagement_requests = { rate = 0.1, burst = 3 }\n";
    let config = config(extra).replace(
        &format!("bearer_tokens = [\"{TOKEN}\"]"),
        &format!("bearer_tokens = [\"{TOKEN}\", \"{other_token}\"]"),
    );
    let gw = Gateway::start(&config).await;
    let list = |token: &str| {
        reqwest::Client::new()
            .get(gw.management_url("/@connections"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(list(TOKEN).await.unwrap().status(), 200);
    }
    let over = list(TOKEN).await.unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers()["x-amzn-errortype"], "LimitExceededException");
    assert_eq!(
        over.text().await.unwrap(),
        r#"{"message":"Too Many Requests"}"#
    );
    // Another token has its own bucket.
    assert_eq!(list(other_token).await.unwrap().status(), 200);
    // Wrong credentials draw from the peer address's bucket: refused, then throttled.
    for _ in 0..3 {
        assert_eq!(list("wrong-token-0123456789").await.unwrap().status(), 403);
    }
    assert_eq!(list("wrong-token-0123456789").await.unwrap().status(), 429);
    // Health checks are never throttled.
    for _ in 0..10 {
        let health = reqwest::get(gw.management_url("/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn node_wide_inflight_cap_holds_calls_until_one_ends() {
    let backend = Backend::slow(Duration::from_millis(1500)).await;
    let extra = format!(
        "[limits]\nmax_inflight_per_node = 2\n[routes.slow]\nintegration = \"slow\"\n\
         [integrations.slow]\ntype = \"http\"\nurl = \"{}\"\n",
        backend.url("/slow")
    );
    let gw = InProcess::start(&config(&extra)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(gw.connect().await);
    }
    let started = tokio::time::Instant::now();
    for ws in &mut clients {
        ws.send(Message::text(r#"{"action":"slow"}"#))
            .await
            .unwrap();
    }
    backend.next().await;
    backend.next().await;
    // The third call waits for a permit (its connection stops reading meanwhile).
    backend.expect_none(Duration::from_millis(800)).await;
    // Its call goes out once a permit is free.
    let third = backend.next().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the third call went out after {:?}",
        started.elapsed()
    );
    assert_eq!(third.json()["requestContext"]["routeKey"], "slow");
    // Nothing was lost: every client is answered afterwards.
    for ws in &mut clients {
        assert_eq!(send(ws, "after").await, "after");
    }
}
