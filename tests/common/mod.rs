//! Test harness: runs the real `switchboard` binary on 127.0.0.1:0 with a configuration
//! written to a temporary file, real HTTP backends (axum) that record every request, and
//! real WebSocket clients (tokio-tungstenite).
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The management token every test configuration uses.
pub const TOKEN: &str = "test-token-0123456789";

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running gateway process.
pub struct Gateway {
    child: Child,
    /// Address of the WebSocket listener.
    pub client_addr: SocketAddr,
    /// Address of the management listener.
    pub management_addr: SocketAddr,
    /// Every log line the process printed so far (JSON).
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// The start of every test configuration: no routes, bearer auth with [`TOKEN`].
pub fn base_config() -> String {
    format!("[management]\nauth = \"bearer\"\nbearer_tokens = [\"{TOKEN}\"]\n")
}

impl Gateway {
    /// Starts the binary with `config` (TOML) and waits until both listeners are bound.
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[]).await
    }

    /// Like [`Gateway::start`], with extra environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("SWITCHBOARD__CLIENT__LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD__MANAGEMENT__LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD__LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let name = v["listener"].as_str().unwrap_or_default().to_owned();
                    let addr: SocketAddr = v["addr"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .expect("addr");
                    let _ = addr_tx.send((name, addr));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut client_addr = None;
        let mut management_addr = None;
        while client_addr.is_none() || management_addr.is_none() {
            let (name, addr) = addr_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("gateway did not report its listeners in 20 s");
            match name.as_str() {
                "client" => client_addr = Some(addr),
                _ => management_addr = Some(addr),
            }
        }
        Gateway {
            child,
            client_addr: client_addr.unwrap(),
            management_addr: management_addr.unwrap(),
            logs,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    /// `ws://…/prod` (or another path).
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.client_addr, path)
    }

    /// Connects a client to `/prod`.
    pub async fn connect(&self) -> Client {
        self.connect_path("/prod").await
    }

    /// Connects a client to `path`.
    pub async fn connect_path(&self, path: &str) -> Client {
        let (ws, response) = connect_async(self.ws_url(path)).await.expect("connect");
        assert_eq!(response.status(), 101);
        ws
    }

    /// Connects and asks the `whoami` route for the connection id (the config must have it).
    pub async fn connect_with_id(&self) -> (Client, String) {
        let mut ws = self.connect().await;
        ws.send(Message::text(r#"{"action":"whoami"}"#))
            .await
            .unwrap();
        let reply = next_text(&mut ws).await;
        let v: Value = serde_json::from_str(&reply).expect("whoami JSON");
        (
            ws,
            v["connectionId"].as_str().expect("connectionId").to_owned(),
        )
    }

    /// `http://management/path`.
    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{}", self.management_addr, path)
    }

    /// An authenticated management request builder.
    pub fn management(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.management_url(path))
            .bearer_auth(TOKEN)
    }

    /// POST `body` to `@connections/{id}`; returns the status and the body text.
    pub async fn post(&self, id: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .management(reqwest::Method::POST, &format!("/@connections/{id}"))
            .body(body)
            .send()
            .await
            .expect("post");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Log lines (parsed JSON) printed so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Raw log text printed so far.
    pub fn raw_logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next text frame (skipping pings), within 10 s.
pub async fn next_text(ws: &mut Client) -> String {
    match next_message(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next message other than ping/pong, within 10 s.
pub async fn next_message(ws: &mut Client) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Waits for the server's close frame (within `limit`); returns it.
pub async fn expect_close(ws: &mut Client, limit: Duration) -> Option<CloseFrame> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {limit:?}"),
            Ok(None) => panic!("stream ended without a close frame"),
            Ok(Some(Err(e))) => panic!("error before close: {e}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Asserts nothing arrives on `ws` within `wait`.
pub async fn expect_silence(ws: &mut Client, wait: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected silence, got {msg:?}");
    }
}

/// One request a backend received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Raw body.
    pub body: Bytes,
}

impl Received {
    /// The body as JSON (the proxy event).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// How a backend answers: `(status, body)` for each request.
pub type Responder = Arc<dyn Fn(&Received) -> (u16, String) + Send + Sync>;

/// A real HTTP backend on 127.0.0.1:0 that records every request.
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct BackendState {
    tx: mpsc::UnboundedSender<Received>,
    responder: Responder,
}

impl Backend {
    /// A backend answering 200 with an empty body.
    pub async fn start() -> Backend {
        Self::with(|_| (200, String::new())).await
    }

    /// A backend answering with `responder`.
    pub async fn with(
        responder: impl Fn(&Received) -> (u16, String) + Send + Sync + 'static,
    ) -> Backend {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = BackendState {
            tx,
            responder: Arc::new(responder),
        };
        let app = Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            rx: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next request it received, within 10 s.
    pub async fn next(&self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.rx.lock().await.recv())
            .await
            .expect("backend got no request within 10 s")
            .expect("backend channel closed")
    }

    /// The next request whose JSON event has `requestContext.eventType == event_type`.
    pub async fn next_event(&self, event_type: &str) -> Value {
        loop {
            let v = self.next().await.json();
            if v["requestContext"]["eventType"] == event_type {
                return v;
            }
        }
    }

    /// Asserts no request arrives within `wait`.
    pub async fn expect_none(&self, wait: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(wait, self.rx.lock().await.recv()).await {
            panic!("expected no backend request, got {} {:?}", r.path, r.body);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(state): State<BackendState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let (status, body) = (state.responder)(&received);
    let _ = state.tx.send(received);
    (StatusCode::from_u16(status).unwrap(), body).into_response()
}

// ---- Added for tests/handshake.rs: backends that delay and/or set response headers ----

/// How a [`Backend::with_headers`] backend answers: `(status, headers, body)`.
pub type HeaderResponder =
    Arc<dyn Fn(&Received) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

#[derive(Clone)]
struct DelayedState {
    tx: mpsc::UnboundedSender<Received>,
    delay: Duration,
    responder: HeaderResponder,
}

impl Backend {
    /// A backend that records each request on arrival, then waits `delay`
    /// (`tokio::time::sleep` in the handler) before answering 200 with an empty body.
    pub async fn slow(delay: Duration) -> Backend {
        Self::with_headers_delayed(delay, |_| (200, Vec::new(), String::new())).await
    }

    /// A backend answering with `responder`, which also chooses response headers.
    pub async fn with_headers(
        responder: impl Fn(&Received) -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
    ) -> Backend {
        Self::with_headers_delayed(Duration::ZERO, responder).await
    }

    /// Like [`Backend::with_headers`], answering only after `delay`.
    pub async fn with_headers_delayed(
        delay: Duration,
        responder: impl Fn(&Received) -> (u16, Vec<(String, String)>, String) + Send + Sync + 'static,
    ) -> Backend {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = DelayedState {
            tx,
            delay,
            responder: Arc::new(responder),
        };
        let app = Router::new().fallback(record_delayed).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            rx: tokio::sync::Mutex::new(rx),
            task,
        }
    }
}

async fn record_delayed(
    State(state): State<DelayedState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let (status, extra, body) = (state.responder)(&received);
    let _ = state.tx.send(received);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (name, value) in extra {
        response.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            axum::http::HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
