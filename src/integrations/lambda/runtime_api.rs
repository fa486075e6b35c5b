//! The Lambda Runtime API (2018-06-01) that one worker process's Runtime Interface Client
//! talks to: plain HTTP/1.1 on `127.0.0.1:<free port>`, one server per worker, so a RIC
//! never gets more than one event at a time.
//!
//! Owns the per-worker invocation state machine (idle → polling → invoking → idle) and
//! turns the RIC's calls into [`Outcome`]s for the pool. Must not time anything out: a
//! parked `/next` waits as long as it takes (the pool enforces deadlines by killing the
//! process).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use rand::RngExt as _;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The largest response a handler may return (Lambda's synchronous payload limit).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// The largest error or init-error report read from a runtime.
const MAX_ERROR_BYTES: usize = 1024 * 1024;

/// One event handed to the worker.
#[derive(Debug)]
pub struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id` (a UUID: the Node RIC puts it in URL paths).
    pub request_id: Arc<str>,
    /// The event JSON.
    pub payload: Bytes,
    /// The function timeout; the deadline starts when the runtime fetches the event.
    pub timeout: Duration,
    /// Told the deadline when the runtime fetched the event (init is over by then).
    pub picked_up: oneshot::Sender<Instant>,
    /// Told what the runtime answered.
    pub outcome: oneshot::Sender<Outcome>,
}

/// What a runtime answered for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler's result, as the JSON the runtime posted.
    Response(Bytes),
    /// The handler failed: Lambda's `errorType` and `errorMessage`.
    Error {
        /// e.g. `Error`, `Runtime.HandlerNotFound`, `Function.ResponseSizeTooLarge`.
        error_type: String,
        /// The error's message.
        message: String,
    },
}

/// The Runtime API of one worker. Dropping it stops the server.
#[derive(Debug)]
pub struct RuntimeApi {
    /// Where it listens: the worker's `AWS_LAMBDA_RUNTIME_API`.
    pub addr: SocketAddr,
    /// Capacity 1: the pool submits an event only to an idle worker.
    inbox: mpsc::Sender<Invocation>,
    shared: Arc<Shared>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// What the handlers share.
#[derive(Debug)]
struct Shared {
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    arn: Arc<str>,
    /// Events for `/next`. A tokio mutex: held across the long poll, by one `/next` at most
    /// (the state machine refuses a second one).
    inbox: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// The invocation state machine. A std mutex: short, sync sections only.
    state: Mutex<Machine>,
    /// Cancelled when the runtime posts `/init/error`.
    init_failed: CancellationToken,
    /// Cancelled when the worker is retired: a parked `/next` returns, the server stops.
    stop: CancellationToken,
    /// Whether the runtime has called `/next` at least once (its init is over).
    polled: AtomicBool,
}

#[derive(Debug, Default)]
struct Machine {
    phase: Phase,
    /// Whether an event was ever handed out (`/init/error` is out of order after that).
    handed_out: bool,
    /// What the runtime posted to `/init/error`.
    init_error: Option<(String, String)>,
}

#[derive(Debug, Default)]
enum Phase {
    /// No `/next` waiting and no event out.
    #[default]
    Idle,
    /// A `/next` is parked.
    Polling,
    /// An event is out and not answered yet.
    Invoking {
        request_id: Arc<str>,
        outcome: oneshot::Sender<Outcome>,
    },
}

impl RuntimeApi {
    /// Binds `127.0.0.1:0` and serves the Runtime API for one worker of function `arn`.
    pub async fn start(arn: Arc<str>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (inbox, rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            arn,
            inbox: tokio::sync::Mutex::new(rx),
            state: Mutex::new(Machine::default()),
            init_failed: CancellationToken::new(),
            stop: CancellationToken::new(),
            polled: AtomicBool::new(false),
        });
        let base = "/2018-06-01/runtime";
        let router = Router::new()
            .route(&format!("{base}/invocation/next"), get(next))
            .route(
                &format!("{base}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{base}/invocation/{{id}}/error"), post(error))
            .route(&format!("{base}/init/error"), post(init_error))
            .fallback(|| async { refusal(StatusCode::NOT_FOUND, "NotFound", "no such path") })
            .with_state(shared.clone());
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            inbox,
            shared,
        })
    }

    /// Hands `invocation` to the worker; gives it back if the worker is not idle.
    pub fn submit(&self, invocation: Invocation) -> Result<(), Box<Invocation>> {
        self.inbox.try_send(invocation).map_err(|e| match e {
            mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => {
                Box::new(i)
            }
        })
    }

    /// Resolves when the runtime has posted `/init/error`.
    pub async fn init_failed(&self) {
        self.shared.init_failed.cancelled().await;
    }

    /// What the runtime posted to `/init/error`, if it did.
    pub fn init_error(&self) -> Option<(String, String)> {
        lock(&self.shared.state).init_error.clone()
    }

    /// Whether the runtime has called `/next` at least once (its init finished).
    pub fn polled(&self) -> bool {
        self.shared.polled.load(Ordering::Relaxed)
    }
}

fn lock(state: &Mutex<Machine>) -> std::sync::MutexGuard<'_, Machine> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Puts a `/next` that ends without an event (the runtime hung up, the worker stopped)
/// back to idle.
struct PollGuard<'a>(&'a Shared);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        if matches!(state.phase, Phase::Polling) {
            state.phase = Phase::Idle;
        }
    }
}

/// `GET /runtime/invocation/next`: parks until the pool submits an event.
async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut state = lock(&shared.state);
        match state.phase {
            Phase::Idle => state.phase = Phase::Polling,
            Phase::Polling => {
                return refusal(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "another /next is already waiting",
                );
            }
            Phase::Invoking { .. } => {
                return refusal(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "the current invocation has not been answered",
                );
            }
        }
    }
    shared.polled.store(true, Ordering::Relaxed);
    let _guard = PollGuard(&shared);
    let invocation = tokio::select! {
        _ = shared.stop.cancelled() => None,
        invocation = async { shared.inbox.lock().await.recv().await } => invocation,
    };
    let Some(invocation) = invocation else {
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "the worker is being stopped",
        );
    };
    // No await from here on: the event cannot be lost to a cancelled request.
    let deadline = Instant::now() + invocation.timeout;
    let deadline_ms = epoch_ms() + invocation.timeout.as_millis() as u64;
    {
        let mut state = lock(&shared.state);
        state.phase = Phase::Invoking {
            request_id: invocation.request_id.clone(),
            outcome: invocation.outcome,
        };
        state.handed_out = true;
    }
    let _ = invocation.picked_up.send(deadline);
    let header = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
    let mut response = Response::new(Body::from(invocation.payload));
    let headers = response.headers_mut();
    // Exactly this value: anything else makes the Python RIC hand the handler raw bytes.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "lambda-runtime-aws-request-id",
        header(&invocation.request_id),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert("lambda-runtime-invoked-function-arn", header(&shared.arn));
    headers.insert("lambda-runtime-trace-id", header(&trace_id()));
    response
}

/// The refusal to send unless `id` is the invocation out now.
fn not_current(shared: &Shared, id: &str) -> Option<Response> {
    let state = lock(&shared.state);
    match &state.phase {
        Phase::Invoking { request_id, .. } if **request_id == *id => None,
        _ if !state.handed_out => Some(refusal(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "no invocation has been handed out",
        )),
        _ => Some(refusal(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "unknown or already answered request id",
        )),
    }
}

/// Ends invocation `id` with `outcome`: 202, or 400 if it is no longer current.
fn finish(shared: &Shared, id: &str, outcome: Outcome) -> Response {
    let mut state = lock(&shared.state);
    match std::mem::take(&mut state.phase) {
        Phase::Invoking {
            request_id,
            outcome: tx,
        } if *request_id == *id => {
            let _ = tx.send(outcome);
            accepted()
        }
        other => {
            state.phase = other;
            refusal(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "unknown or already answered request id",
            )
        }
    }
}

/// `POST /runtime/invocation/{id}/response`.
async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    if let Some(refused) = not_current(&shared, &id) {
        return refused;
    }
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => finish(&shared, &id, Outcome::Response(collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => {
            let message = format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            );
            finish(
                &shared,
                &id,
                Outcome::Error {
                    error_type: "Function.ResponseSizeTooLarge".into(),
                    message: message.clone(),
                },
            );
            refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &message,
            )
        }
        Err(e) => refusal(StatusCode::BAD_REQUEST, "InvalidRequest", &e.to_string()),
    }
}

/// `POST /runtime/invocation/{id}/error`.
async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = not_current(&shared, &id) {
        return refused;
    }
    let raw = read_small(body).await;
    let (error_type, message) = error_report(&headers, &raw);
    finish(
        &shared,
        &id,
        Outcome::Error {
            error_type,
            message,
        },
    )
}

/// `POST /runtime/init/error`: the worker is marked failed (the pool replaces it).
async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if lock(&shared.state).handed_out {
        return refusal(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init is over: an invocation was handed out",
        );
    }
    let raw = read_small(body).await;
    let report = error_report(&headers, &raw);
    lock(&shared.state).init_error = Some(report);
    shared.init_failed.cancel();
    // Exactly 202: the Python RIC raises on anything else.
    accepted()
}

async fn read_small(body: Body) -> Bytes {
    Limited::new(body, MAX_ERROR_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// The error type and message of an error report: the body's `errorType` first, then the
/// `Lambda-Runtime-Function-Error-Type` header, then `Runtime.Unknown`. (Node's invocation
/// errors carry no header; Python's init errors carry both.)
pub fn error_report(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Runtime.Unknown".into());
    let message = field("errorMessage").unwrap_or_else(|| {
        if parsed.is_none() {
            String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned()
        } else {
            String::new()
        }
    });
    (error_type, message)
}

fn accepted() -> Response {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.to_owned())
}

/// An error answer in the Runtime API's shape.
fn refusal(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    json_response(status, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A fresh request id: a random (version 4) UUID.
pub fn request_id() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An X-Ray trace header, `Root=1-<epoch hex>-<96 random bits>;Parent=…;Sampled=0`.
fn trace_id() -> String {
    let root: [u8; 12] = rand::rng().random();
    let parent: [u8; 8] = rand::rng().random();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        epoch_ms() / 1000,
        hex(&root),
        hex(&parent)
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuids() {
        let id = request_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert_ne!(id, request_id());
    }

    #[test]
    fn error_reports_prefer_the_body() {
        let mut headers = HeaderMap::new();
        let node = br#"{"errorType":"TypeError","errorMessage":"boom","trace":["a"]}"#;
        assert_eq!(
            error_report(&headers, node),
            ("TypeError".into(), "boom".into())
        );
        headers.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Runtime.ImportModuleError"),
        );
        assert_eq!(
            error_report(&headers, br#"{"errorMessage":"no module"}"#),
            ("Runtime.ImportModuleError".into(), "no module".into())
        );
        assert_eq!(
            error_report(&HeaderMap::new(), b"not json"),
            ("Runtime.Unknown".into(), "not json".into())
        );
    }

    /// A minimal HTTP/1.1 client over hyper (the crate's own client is for integrations).
    mod runtime_client {
        use axum::http::{HeaderMap, Request};
        use bytes::Bytes;
        use http_body_util::{BodyExt as _, Full};
        use hyper_util::client::legacy::Client as Hyper;
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::rt::TokioExecutor;

        pub struct Client {
            base: String,
            hyper: Hyper<HttpConnector, Full<Bytes>>,
        }

        impl Client {
            pub fn new(addr: std::net::SocketAddr) -> Self {
                Self {
                    base: format!("http://{addr}/2018-06-01/runtime"),
                    hyper: Hyper::builder(TokioExecutor::new()).build_http(),
                }
            }

            pub async fn call(
                &self,
                method: &str,
                path: &str,
                body: &str,
            ) -> (u16, HeaderMap, String) {
                let request = Request::builder()
                    .method(method)
                    .uri(format!("{}{path}", self.base))
                    .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                    .unwrap();
                let response = self.hyper.request(request).await.unwrap();
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, headers, String::from_utf8_lossy(&body).into_owned())
            }
        }
    }

    fn invocation(
        id: &str,
    ) -> (
        Invocation,
        oneshot::Receiver<Instant>,
        oneshot::Receiver<Outcome>,
    ) {
        let (picked_tx, picked_rx) = oneshot::channel();
        let (outcome_tx, outcome_rx) = oneshot::channel();
        (
            Invocation {
                request_id: id.into(),
                payload: Bytes::from_static(b"{\"a\":1}"),
                timeout: Duration::from_secs(3),
                picked_up: picked_tx,
                outcome: outcome_tx,
            },
            picked_rx,
            outcome_rx,
        )
    }

    #[tokio::test]
    async fn serves_one_invocation_at_a_time_in_order() {
        let api = RuntimeApi::start("arn:aws:lambda:us-east-1:000000000000:function:f".into())
            .await
            .unwrap();
        let client = runtime_client::Client::new(api.addr);
        let (status, _, _) = client.call("POST", "/invocation/x/response", "1").await;
        assert_eq!(status, 403, "a response before any event is out of order");

        let (inv, picked, outcome) = invocation("id-1");
        api.submit(inv).unwrap();
        let (status, headers, body) = client.call("GET", "/invocation/next", "").await;
        assert_eq!(status, 200);
        assert_eq!(body, "{\"a\":1}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["lambda-runtime-aws-request-id"], "id-1");
        assert_eq!(
            headers["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        let deadline: u64 = headers["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let left = deadline.saturating_sub(epoch_ms());
        assert!((2000..=3000).contains(&left), "{left}");
        assert!(
            headers["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        picked.await.unwrap();
        assert!(api.polled());

        let (status, _, _) = client.call("GET", "/invocation/next", "").await;
        assert_eq!(status, 403, "next before answering");
        let (status, _, _) = client.call("POST", "/invocation/other/response", "1").await;
        assert_eq!(status, 400);
        let (status, _, body) = client
            .call("POST", "/invocation/id-1/response", "\"ok\"")
            .await;
        assert_eq!((status, body.as_str()), (202, r#"{"status":"OK"}"#));
        assert_eq!(
            outcome.await.unwrap(),
            Outcome::Response(Bytes::from_static(b"\"ok\""))
        );
        let (status, _, _) = client.call("POST", "/invocation/id-1/response", "2").await;
        assert_eq!(status, 400, "already answered");
        let (status, _, _) = client.call("POST", "/init/error", "{}").await;
        assert_eq!(status, 403, "init is over");

        let (inv, _picked, outcome) = invocation("id-2");
        api.submit(inv).unwrap();
        let (status, _, _) = client.call("GET", "/invocation/next", "").await;
        assert_eq!(status, 200);
        let (status, _, _) = client
            .call(
                "POST",
                "/invocation/id-2/error",
                r#"{"errorType":"Error","errorMessage":"boom"}"#,
            )
            .await;
        assert_eq!(status, 202);
        assert_eq!(
            outcome.await.unwrap(),
            Outcome::Error {
                error_type: "Error".into(),
                message: "boom".into()
            }
        );
    }

    #[tokio::test]
    async fn init_errors_mark_the_worker_failed() {
        let api = RuntimeApi::start("arn".into()).await.unwrap();
        let client = runtime_client::Client::new(api.addr);
        let (status, _, body) = client.call(
            "POST",
            "/init/error",
            r#"{"errorType":"Runtime.ImportModuleError","errorMessage":"Cannot find module 'app'"}"#,
        )
        .await;
        assert_eq!((status, body.as_str()), (202, r#"{"status":"OK"}"#));
        api.init_failed().await;
        assert_eq!(
            api.init_error(),
            Some((
                "Runtime.ImportModuleError".into(),
                "Cannot find module 'app'".into()
            ))
        );
    }
}
