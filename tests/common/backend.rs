//! HTTP backends for the gateway's integrations and authorizers: [`Backend`], a real axum
//! server on 127.0.0.1:0 that records every request and answers as the test says (at
//! once or after a delay), and [`ChatBackend`], the example chat backend
//! (`examples/chat/server.py`) run as a process.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use serde_json::Value;
use tokio::sync::mpsc;

use super::TOKEN;

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
        // Nagle off, as the gateway's sockets: on paused time a reply held back for a
        // delayed ACK (real time) would arrive after the clock jumped past the test's timers.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
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
