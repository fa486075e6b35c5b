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

/// How a backend answers: `(status, headers, body)` for each request.
pub type Responder = Arc<dyn Fn(&Received) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

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
    /// How long to wait after recording a request before answering it.
    delay: Duration,
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
        Self::with_headers_delayed(Duration::ZERO, move |r| {
            let (status, body) = responder(r);
            (status, Vec::new(), body)
        })
        .await
    }

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
        let state = BackendState {
            tx,
            delay,
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

/// Records a request, waits the backend's delay, answers what its responder says.
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

/// A real `redis-server` on a free port in a temporary directory, nothing kept on disk.
/// It can be stopped and started again on the same port (empty, as after a restart).
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port, empty.
    pub async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read as _, Write as _};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a redis-cli command; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config for a cluster node on `redis` with a short lease, plus `extra` sections.
pub fn cluster_config(redis: &RedisServer, extra: &str) -> String {
    format!(
        "{}\n[cluster]\nredis_url = \"{}\"\nlease_ttl_ms = 1500\nrequest_timeout_ms = 1000\n{extra}",
        base_config(),
        redis.url()
    )
}

/// The `whoami` route and its mock integration, for `connect_with_id`.
pub const WHOAMI: &str = "[routes.whoami]\nintegration = \"whoami\"\ntwo_way = true\n[integrations.whoami]\ntype = \"mock\"\ntemplate = '{\"connectionId\": \"$context.connectionId\"}'\n";

impl Gateway {
    /// Waits until `/healthz`-independent backplane registration is visible: the node's
    /// log says it registered with the backplane.
    pub async fn wait_registered(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.raw_logs().contains("registered with the backplane") {
            assert!(
                std::time::Instant::now() < deadline,
                "node never registered with Redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- Added for tests/cluster.rs, tests/haproxy.rs, tests/groups.rs: node tags, readiness, SIGKILL ----

/// The node tag (8 hex digits) embedded in a connection id: its first 4 bytes.
pub fn node_of(connection_id: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(connection_id)
        .unwrap_or_else(|e| panic!("connection id {connection_id:?} is not base64url: {e}"));
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl Gateway {
    /// How many log lines so far have `message` exactly.
    pub fn count_logs(&self, message: &str) -> usize {
        self.logs()
            .iter()
            .filter(|v| v["message"] == message)
            .count()
    }

    /// Waits (up to 10 s) until the node is subscribed to its inbox and the broadcast
    /// channel and has registered itself; returns its node tag.
    pub async fn wait_backplane_ready(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            let subscribed = logs.iter().find(|v| v["message"] == "backplane subscribed");
            let registered = logs
                .iter()
                .any(|v| v["message"] == "registered with the backplane");
            if let (Some(s), true) = (subscribed, registered) {
                return s["node"].as_str().expect("node field").to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node never became ready on the backplane"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGKILL (no shutdown, no deregistration: as a crash) and waits for the exit.
    pub async fn sigkill(&mut self) {
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        assert_eq!(
            self.wait_exit(Duration::from_secs(5)).await,
            None,
            "a killed process has no exit code"
        );
        assert!(
            self.child.try_wait().expect("try_wait").is_some(),
            "still running after SIGKILL"
        );
    }
}

impl Gateway {
    /// An authenticated management call; returns the status and the body as JSON
    /// (`Null` when empty).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .management(method, path)
            .body(body.to_owned())
            .send()
            .await
            .expect("management call");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {text:?}: {e}"))
        };
        (status, value)
    }
}

/// Follows a paginated listing (`path` must already carry `?limit=…`), asking the gateways
/// in turn (page 1 from the first, page 2 from the second, …); returns each page's ids
/// (`members` are ids; `connections` entries give their `connectionId`).
pub async fn list_pages(gateways: &[&Gateway], path: &str, field: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..200 {
        let url = match &cursor {
            Some(c) => format!(
                "{path}&cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
            None => path.to_owned(),
        };
        let (status, v) = gateways[page % gateways.len()]
            .call(reqwest::Method::GET, &url, "")
            .await;
        assert_eq!(status, 200, "{url}: {v}");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("a listing is an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = ["cursor", field];
        want.sort_unstable();
        assert_eq!(keys, want, "{v}");
        out.push(
            v[field]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| match item {
                    Value::String(id) => id.clone(),
                    entry => entry["connectionId"]
                        .as_str()
                        .expect("connectionId")
                        .to_owned(),
                })
                .collect(),
        );
        match &v["cursor"] {
            Value::Null => return out,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("cursor is {other}"),
        }
    }
    panic!("listing {path} never ended");
}

impl Gateway {
    /// The configuration file the process was started with (rewrite it, then `sighup`).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("switchboard.toml")
    }

    /// A scratch directory that lives as long as the gateway.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Scrapes `/metrics`; returns the exposition text.
    pub async fn metrics(&self) -> String {
        let r = self
            .management(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

/// The value of the first sample of `name` whose labels contain every `label="value"` in
/// `labels` (0 when there is none).
pub fn sample(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

// ---- Added for tests/hostile.rs and tests/conformance.rs: raw WebSocket frames ----
pub mod raw;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `haproxy -db` with its configuration in a temporary directory.
pub struct Haproxy {
    child: Child,
    /// The frontend (WebSocket clients connect here).
    pub port: u16,
    /// The stats page (CSV at `/stats;csv`).
    pub stats_port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes a configuration balancing over `nodes` and starts haproxy in the foreground.
    pub fn start(nodes: &[&Gateway]) -> Haproxy {
        if Command::new("haproxy").arg("-v").output().is_err() {
            panic!(
                "`haproxy` is not installed or not on PATH: run scripts/test.sh, which installs \
                 it, or `apt-get install haproxy`"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (port, stats_port) = (free_port(), free_port());
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, gw)| {
                format!(
                    "    server node{i} {} check port {}\n",
                    gw.client_addr,
                    gw.management_addr.port()
                )
            })
            .collect();
        let config = format!(
            "global\n\
             \x20   maxconn 1000\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\
             \x20   timeout http-request 5s\n\
             \x20   timeout tunnel 1h\n\
             frontend websocket\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend gateways\n\
             backend gateways\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk GET /readyz\n\
             \x20   http-check expect ! string draining\n\
             \x20   option redispatch\n\
             \x20   retries 2\n\
             \x20   default-server inter 200ms fall 2 rise 1\n\
             {servers}\
             listen stats\n\
             \x20   bind 127.0.0.1:{stats_port}\n\
             \x20   stats enable\n\
             \x20   stats uri /stats\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        check_haproxy_config(&path);
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn haproxy");
        Haproxy {
            child,
            port,
            stats_port,
            _dir: dir,
        }
    }

    /// Waits (up to 10 s) until every server is UP after a passing HTTP check (`L7OK`).
    pub async fn wait_all_up(&mut self, servers: usize) {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/stats;csv", self.stats_port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("haproxy exited: {status}");
            }
            if let Ok(r) = http.get(&url).send().await {
                last = r.text().await.unwrap_or_default();
                if servers_up(&last) == servers {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy servers not all UP:\n{last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ws://127.0.0.1:port/prod` through haproxy.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/prod", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `haproxy -c` accepts the file.
fn check_haproxy_config(path: &std::path::Path) {
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(path)
        .output()
        .expect("haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c refused the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Servers of backend `gateways` that the stats CSV shows UP with a passing layer-7 check.
fn servers_up(csv: &str) -> usize {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return 0 };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st), Some(check)) = (
        col("pxname"),
        col("svname"),
        col("status"),
        col("check_status"),
    ) else {
        return 0;
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| {
            f.get(px) == Some(&"gateways")
                && f.get(sv).is_some_and(|s| s.starts_with("node"))
                && f.get(st) == Some(&"UP")
                && f.get(check) == Some(&"L7OK")
        })
        .count()
}

/// The backend process, killed when dropped.
pub struct ChatBackend(Child);

impl Drop for ChatBackend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChatBackend {
    /// Starts `examples/chat/server.py` on `port` with the management API at `management`
    /// (and `public_url` as the WebSocket URL its page uses, when not empty) and waits until
    /// it accepts connections.
    pub async fn start(port: u16, management: &str, public_url: &str) -> ChatBackend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chat/server.py");
        let child = Command::new("python3")
            .arg("-u")
            .arg(script)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("SWITCHBOARD_MANAGEMENT_URL", management)
            .env("SWITCHBOARD_TOKEN", TOKEN)
            .env("SWITCHBOARD_PUBLIC_URL", public_url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed to run the example backend");
        let mut python = ChatBackend(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = python.0.try_wait().unwrap() {
                panic!("server.py exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server.py did not listen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        python
    }
}

/// The compose kit's gateway configuration, run as is: only addresses (and the token)
/// are overridden from the environment, as a deployment would.
pub fn compose_config() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/switchboard.toml"
    ))
    .expect("deploy/switchboard.toml")
}
