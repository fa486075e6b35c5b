//! Clients of resumable sessions (`switchboard.resume.v1`, docs/resume.md): handshakes
//! with and without a resume, the welcome, frames checked for consecutive offsets, cutting
//! a TCP connection without a close frame; senders that number what they send; and the
//! scenario of a session moving between live nodes, run on one Redis and on a Redis
//! Cluster.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, connect_async_with_config};

use super::{Backend, Client, Endpoints, Gateway, eventually, next_text};

pub const SUBPROTOCOL: &str = "switchboard.resume.v1";

/// A WebSocket handshake offering the resume subprotocol, with `query` (`?sb_resume=…`).
pub async fn try_connect_resumable(
    gw: &Gateway,
    query: &str,
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = gw
        .ws_url(&format!("/prod{query}"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse().unwrap());
    connect_async_with_config(request, None, true).await
}

/// A WebSocket client offering the resume subprotocol, with `query` (`?sb_resume=…`).
pub async fn connect_resumable(gw: &Gateway, query: &str) -> Client {
    let (ws, response) = try_connect_resumable(gw, query).await.expect("connect");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        SUBPROTOCOL
    );
    ws
}

/// The next frame as JSON (every resumable frame but a binary payload is JSON).
pub async fn next_json(ws: &mut Client) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The welcome frame, checked for its shape.
pub async fn welcome(ws: &mut Client) -> Value {
    let w = next_json(ws).await;
    assert_eq!(w["$sb"], "welcome", "{w}");
    assert!(
        w["connectionId"].as_str().is_some_and(|id| id.len() == 16),
        "{w}"
    );
    assert!(w["token"].as_str().is_some(), "{w}");
    w
}

/// A new resumable session: the socket, its connection id and its resume token.
pub async fn open_session(gw: &Gateway) -> (Client, String, String) {
    let mut ws = connect_resumable(gw, "").await;
    let w = welcome(&mut ws).await;
    assert_eq!(
        (&w["resumed"], &w["offset"]),
        (&Value::from(false), &Value::from(0)),
        "{w}"
    );
    let id = w["connectionId"].as_str().unwrap().to_owned();
    let token = w["token"].as_str().unwrap().to_owned();
    (ws, id, token)
}

/// Waits until `gw` (any node) reports `id` suspended.
pub async fn until_suspended(gw: &Gateway, id: &str) {
    eventually(
        "GET reports the connection suspended",
        Duration::from_secs(5),
        || async {
            let (status, v) = gw.get_connection(id).await;
            (status == 200 && v["status"] == "suspended").then_some(())
        },
    )
    .await;
}

/// Cuts the client's TCP connection without a close frame: a reset (SO_LINGER 0).
pub fn cut(ws: Client) {
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        tcp.set_zero_linger().unwrap();
    }
    drop(ws);
}

/// The resume query for a welcome's token and the last offset processed.
pub fn resume_query(token: &str, offset: u64) -> String {
    format!("?sb_resume={token}&sb_offset={offset}")
}

/// What a client has received: the payloads by offset, checked to be consecutive.
#[derive(Default)]
pub struct Numbered {
    pub last: u64,
    pub payloads: Vec<String>,
}

impl Numbered {
    /// Reads one message frame; panics on a gap, a duplicate or a frame of another kind.
    pub async fn read(&mut self, ws: &mut Client) {
        let m = next_json(ws).await;
        assert_eq!(m["$sb"], "m", "{m}");
        let offset = m["o"].as_u64().unwrap();
        assert_eq!(offset, self.last + 1, "offsets are consecutive: {m}");
        self.last = offset;
        self.payloads.push(m["d"].as_str().unwrap().to_owned());
    }
}

/// Every `$connect`/`$disconnect` the backend saw so far for `id`, without waiting long.
pub async fn events_for(backend: &Backend, id: &str, wait: Duration) -> Vec<Value> {
    let mut events = Vec::new();
    while let Ok(r) = tokio::time::timeout(wait, backend.next()).await {
        let v = r.json();
        if v["requestContext"]["connectionId"] == id {
            events.push(v);
        }
    }
    events
}

/// Sends `<prefix>0`…`<prefix>{n-1}` one at a time through `via`: POSTs to `id`, or
/// messages to group `room` when `id` is `None`, a few milliseconds apart. An answer of
/// 503 (the session moving between nodes, or its dead node not yet reaped) is asked again
/// for up to ten seconds; any other failure panics.
pub async fn send_numbered(via: Endpoints, id: Option<String>, prefix: &'static str, n: usize) {
    for k in 0..n {
        let body = format!("{prefix}{k}");
        let asked = std::time::Instant::now();
        loop {
            let status = match &id {
                Some(id) => via.post(id, body.clone()).await.0,
                None => via.to_group("room", &body).await.0,
            };
            match status {
                200 | 202 => break,
                503 if asked.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => panic!("{body}: {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asserts that `payloads` hold, for each of `prefixes`, exactly what [`send_numbered`]
/// sent with it (`<prefix>0`…`<prefix>{each-1}`): each once, in order.
pub fn assert_each_sender_once_in_order(payloads: &[String], prefixes: &[&str], each: usize) {
    for prefix in prefixes {
        let sent: Vec<String> = (0..each).map(|k| format!("{prefix}{k}")).collect();
        let received: Vec<&String> = payloads.iter().filter(|p| p.starts_with(prefix)).collect();
        assert_eq!(
            received,
            sent.iter().collect::<Vec<_>>(),
            "{prefix}: once each, in order"
        );
    }
}

/// Resumes through `gw`, asked again while it answers 409 (a move or a death not settled).
pub async fn resume_through(gw: &Gateway, token: &str, offset: u64) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match try_connect_resumable(gw, &resume_query(token, offset)).await {
            Ok((ws, _)) => return ws,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The `$connect`/`$disconnect` part of a resumable gateway's configuration, posting
/// both events to `backend`.
pub fn resume_events_config(backend: &Backend, window_secs: u64) -> String {
    format!(
        "[resume]\nenabled = true\nwindow_secs = {window_secs}\n\
         [routes.\"$connect\"]\nintegration = \"events\"\n\
         [routes.\"$disconnect\"]\nintegration = \"events\"\n\
         [integrations.events]\ntype = \"http\"\nurl = \"{}\"\ntimeout_ms = 2000\n",
        backend.url("/events")
    )
}

/// Three live nodes (configured with [`resume_events_config`] for `backend`): a session
/// opened on the first moves to the second when its client, cut mid-stream, resumes
/// there — while POSTs through two nodes and group messages through all three flow, each
/// received exactly once and in order — then back to the first while its socket on the
/// second is still open; no `$disconnect` until a clean close, then one.
pub async fn assert_a_session_moves_between_live_nodes(gws: &[Gateway], backend: &Backend) {
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let (mut ws, id, token) = open_session(a).await;
    assert_eq!(
        backend.next_event("CONNECT").await["requestContext"]["resumed"],
        false
    );
    assert_eq!(b.join("room", &id).await.0, 204);
    // POSTs through two nodes and group messages through all three flow all along, each
    // sender one message at a time (so each sender's order is defined).
    const EACH: usize = 250;
    const PREFIXES: [&str; 5] = ["p", "q", "g", "h", "k"];
    let senders = [
        tokio::spawn(send_numbered((**c).clone(), Some(id.clone()), "p", EACH)),
        tokio::spawn(send_numbered((**b).clone(), Some(id.clone()), "q", EACH)),
        tokio::spawn(send_numbered((**a).clone(), None, "g", EACH)),
        tokio::spawn(send_numbered((**b).clone(), None, "h", EACH)),
        tokio::spawn(send_numbered((**c).clone(), None, "k", EACH)),
    ];
    let mut got = Numbered::default();
    for _ in 0..30 {
        got.read(&mut ws).await;
    }
    // The TCP connection is cut; the client comes back through another node, while the
    // session's node is alive: the session moves there, with everything after the
    // client's offset.
    cut(ws);
    let mut ws = resume_through(b, &token, got.last).await;
    let w = welcome(&mut ws).await;
    assert_eq!(
        (&w["resumed"], &w["connectionId"]),
        (&Value::from(true), &Value::from(id.as_str())),
        "{w}"
    );
    let all = async {
        while got.payloads.len() < PREFIXES.len() * EACH {
            got.read(&mut ws).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every message arrives");
    for sender in senders {
        sender.await.unwrap();
    }
    assert_each_sender_once_in_order(&got.payloads, &PREFIXES, EACH);
    // It lives on the new node now: reached through the node its id names, and through
    // the third.
    assert_eq!(a.post(&id, "via-a").await.0, 200);
    got.read(&mut ws).await;
    let (status, v) = c.get_connection(&id).await;
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("connected")),
        "{v}"
    );
    // The client comes back through the first node while its socket on the second is still
    // open (a silent network loss): the session moves back, and the old socket is closed.
    let mut old = ws;
    let mut ws = resume_through(a, &token, got.last).await;
    assert_eq!(welcome(&mut ws).await["resumed"], true);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match old.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the superseded socket is closed");
    assert_eq!(c.post(&id, "back").await.0, 200);
    assert_eq!(b.to_group("room", "g-back").await.0, 202);
    got.read(&mut ws).await;
    got.read(&mut ws).await;
    assert_eq!(
        got.payloads[PREFIXES.len() * EACH + 1..],
        ["back", "g-back"]
    );
    // Two resumes, no $disconnect: the session never ended.
    let events = events_for(backend, &id, Duration::from_millis(500)).await;
    let kinds: Vec<(&Value, &Value)> = events
        .iter()
        .map(|e| {
            (
                &e["requestContext"]["eventType"],
                &e["requestContext"]["resumed"],
            )
        })
        .collect();
    let resumed = (&Value::from("CONNECT"), &Value::from(true));
    assert_eq!(kinds, [resumed, resumed], "{events:?}");
    // A clean close ends it where it is: $disconnect, once.
    ws.close(None).await.unwrap();
    let disconnect = backend.next_event("DISCONNECT").await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert!(
        events_for(backend, &id, Duration::from_millis(1500))
            .await
            .is_empty()
    );
}
