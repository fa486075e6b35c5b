//! The `lambda` integration through the real binary: AWS's own Runtime Interface Clients
//! (npm `aws-lambda-ric` 3.3.0, PyPI `awslambdaric`) run the plain AWS handlers in
//! tests/lambda/{node,python}/app.{js,py} — files with nothing Switchboard-specific — and
//! real WebSocket clients call them.
//!
//! scripts/lambda-rics.sh installs the RICs into target/lambda-ric and target/pyvenv
//! (scripts/test.sh runs it).
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug)]
enum Runtime {
    Node,
    Python,
}

impl Runtime {
    fn id(self) -> &'static str {
        match self {
            Runtime::Node => "nodejs20.x",
            Runtime::Python => "python3.11",
        }
    }

    fn code_dir(self) -> String {
        let dir = match self {
            Runtime::Node => "node",
            Runtime::Python => "python",
        };
        format!("{}/tests/lambda/{dir}", env!("CARGO_MANIFEST_DIR"))
    }
}

/// The Node RIC launcher installed by scripts/lambda-rics.sh.
fn node_ric() -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/lambda-ric/node_modules/.bin/aws-lambda-ric"
    ));
    assert!(
        path.exists(),
        "{} is missing: run scripts/lambda-rics.sh (npm install aws-lambda-ric@3.3.0)",
        path.display()
    );
    path
}

/// The test venv's Python, with awslambdaric (scripts/lambda-rics.sh, scripts/test.sh).
fn python() -> PathBuf {
    let venv = std::env::var("SWITCHBOARD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv")));
    let python = venv.join("bin").join("python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import awslambdaric"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no awslambdaric: run scripts/lambda-rics.sh",
        python.display()
    );
    python
}

/// One function per route, all from the runtime's app file.
fn config(runtime: Runtime) -> String {
    let function = |name: &str, extra: &str| {
        format!(
            "[integrations.{name}]\ntype = \"lambda\"\nruntime = \"{}\"\nhandler = \"app.{name}\"\ncode_dir = \"{}\"\n{extra}\n",
            runtime.id(),
            runtime.code_dir()
        )
    };
    let mut config = base_config();
    for (route, integration) in [
        ("$connect", "connect"),
        ("echo", "echo"),
        ("throws", "throws"),
        ("sleeps", "sleeps"),
        ("exits", "exits"),
        ("busy", "busy"),
        ("broken", "broken"),
    ] {
        config.push_str(&format!(
            "[routes.\"{route}\"]\nintegration = \"{integration}\"\ntwo_way = true\n"
        ));
    }
    config.push_str(&function("connect", "concurrency = 1\ntimeout_ms = 1000"));
    config.push_str(&function(
        "echo",
        "function_name = \"echo-fn\"\nmemory_mb = 256\ntimeout_ms = 3000\n[integrations.echo.environment]\nTABLE_NAME = \"connections\"",
    ));
    config.push_str(&function("throws", "concurrency = 1"));
    config.push_str(&function("sleeps", "concurrency = 1\ntimeout_ms = 1000"));
    config.push_str(&function("exits", "concurrency = 1"));
    // One worker, no queue: a second call while the first runs is throttled at once.
    config.push_str(
        &function("busy", "concurrency = 1\nqueue = 0\ntimeout_ms = 5000")
            .replace("app.busy", "app.sleeps"),
    );
    // A handler whose module does not exist: every init fails.
    config
        .push_str(&function("broken", "concurrency = 1").replace("app.broken", "missing.handler"));
    config
}

async fn start(runtime: Runtime) -> Gateway {
    let node = node_ric();
    let python = python();
    Gateway::start_with_env(
        &config(runtime),
        &[
            ("SWITCHBOARD__LAMBDA__NODE_RIC", node.to_str().unwrap()),
            ("SWITCHBOARD__LAMBDA__PYTHON", python.to_str().unwrap()),
        ],
    )
    .await
}

/// Sends `message` and returns the answer as JSON.
async fn ask(ws: &mut Client, message: Value) -> Value {
    ws.send(Message::text(message.to_string())).await.unwrap();
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

fn assert_internal_error(answer: &Value) {
    assert_eq!(answer["message"], "Internal server error", "{answer}");
    assert!(answer["connectionId"].is_string(), "{answer}");
    assert!(answer["requestId"].is_string(), "{answer}");
}

/// The status a handshake to `path` gets (101 when accepted).
async fn handshake_status(gw: &Gateway, path: &str) -> u16 {
    match connect_async(gw.ws_url(path)).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed without a status: {other}"),
    }
}

/// Echo with the context, `$connect` answers, a throw, and the handler's output in the log.
async fn handlers_run_unchanged(runtime: Runtime) {
    let gw = start(runtime).await;

    // $connect runs a Lambda: 200 accepts, 403 refuses, a throw is 502, and so is a
    // timeout (AWS: 502 for a Lambda, unlike an HTTP integration's 504).
    assert_eq!(handshake_status(&gw, "/prod?deny=1").await, 403);
    assert_eq!(handshake_status(&gw, "/prod?fail=1").await, 502);
    assert_eq!(handshake_status(&gw, "/prod?sleep=3000").await, 502);
    let mut ws = gw.connect().await;

    let answer = ask(
        &mut ws,
        serde_json::json!({"action": "echo", "text": "hello"}),
    )
    .await;
    assert_eq!(answer["echo"], "hello", "{answer}");
    assert_eq!(answer["routeKey"], "echo");
    assert_eq!(answer["functionName"], "echo-fn");
    assert_eq!(
        answer["invokedFunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo-fn"
    );
    assert_eq!(answer["memoryLimitInMB"], "256");
    let request_id = answer["awsRequestId"].as_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    let remaining = answer["remainingMs"].as_i64().unwrap();
    assert!(
        remaining > 0 && remaining <= 3000,
        "remaining time {remaining}"
    );
    if let Runtime::Node = runtime {
        assert_eq!(answer["functionVersion"], "$LATEST");
        assert_eq!(answer["logGroupName"], "/aws/lambda/echo-fn");
        assert_eq!(answer["region"], "us-east-1");
        assert_eq!(answer["tableName"], "connections");
    } else {
        assert_eq!(
            answer["eventIsDict"], true,
            "Content-Type must be exactly application/json"
        );
    }

    // Warm: more calls run on the same two workers (concurrency = 2), new request ids.
    for n in 0..4 {
        let again = ask(&mut ws, serde_json::json!({"action": "echo", "text": n})).await;
        assert_eq!(again["echo"], n);
        assert_ne!(again["awsRequestId"], answer["awsRequestId"]);
    }
    let started = gw
        .logs()
        .iter()
        .filter(|l| l["message"] == "lambda worker started" && l["function"] == "echo-fn")
        .count();
    assert_eq!(started, 2, "a pool of two warm workers");

    // A throw: Internal server error, and the connection stays open.
    let error = ask(&mut ws, serde_json::json!({"action": "throws"})).await;
    assert_internal_error(&error);
    let answer = ask(
        &mut ws,
        serde_json::json!({"action": "echo", "text": "still here"}),
    )
    .await;
    assert_eq!(answer["echo"], "still here");

    // The handler's output is in the gateway's log, with the Lambda request id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = gw.logs().into_iter().any(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("echo handler called: hello"))
                && line["request_id"] == request_id.as_str()
                && line["function"] == "echo-fn"
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with the handler's output and request id {request_id}:\n{}",
            gw.raw_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.raw_logs().contains("lambda cold start"),
        "cold starts are logged"
    );
}

/// A timeout and a crash each answer Internal server error and the next call succeeds on
/// a new worker; a full queue fails at once.
async fn failures_replace_the_worker(runtime: Runtime) {
    let gw = start(runtime).await;
    let mut ws = gw.connect().await;

    // Timeout (1 s): the worker is killed; the next call gets a fresh one.
    let first = ask(&mut ws, serde_json::json!({"action": "sleeps"})).await;
    assert_eq!(first["awake"], true, "{first}");
    let started = Instant::now();
    let error = ask(
        &mut ws,
        serde_json::json!({"action": "sleeps", "sleep": 5000}),
    )
    .await;
    assert_internal_error(&error);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(4000),
        "answered after {waited:?}"
    );
    let next = ask(&mut ws, serde_json::json!({"action": "sleeps"})).await;
    assert_eq!(next["awake"], true, "{next}");
    assert_ne!(next["pid"], first["pid"], "a new worker after the timeout");

    // Crash: the runtime exits mid-invocation; the worker is restarted.
    let first = ask(&mut ws, serde_json::json!({"action": "exits"})).await;
    assert_eq!(first["alive"], true, "{first}");
    let error = ask(
        &mut ws,
        serde_json::json!({"action": "exits", "exit": true}),
    )
    .await;
    assert_internal_error(&error);
    let next = ask(&mut ws, serde_json::json!({"action": "exits"})).await;
    assert_eq!(next["alive"], true, "{next}");
    assert_ne!(next["pid"], first["pid"], "a new worker after the crash");
    assert!(gw.raw_logs().contains("Runtime.ExitError"));
    assert!(gw.raw_logs().contains("Sandbox.Timeout"));

    // queue = 0 and one busy worker: a second call is refused at once, the first finishes.
    let warm = ask(&mut ws, serde_json::json!({"action": "busy"})).await;
    assert_eq!(warm["awake"], true, "{warm}");
    ws.send(Message::text(
        serde_json::json!({"action": "busy", "sleep": 1500}).to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = ask(&mut ws, serde_json::json!({"action": "busy"})).await;
    assert_internal_error(&error);
    let slow: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(slow["awake"], true, "{slow}");
    assert!(gw.raw_logs().contains("TooManyRequestsException"));

    // An init failure answers the call that waited for it, and again after a restart.
    for _ in 0..2 {
        let error = ask(&mut ws, serde_json::json!({"action": "broken"})).await;
        assert_internal_error(&error);
    }
    assert!(gw.raw_logs().contains("Runtime.ImportModuleError"));
    let answer = ask(
        &mut ws,
        serde_json::json!({"action": "echo", "text": "fine"}),
    )
    .await;
    assert_eq!(answer["echo"], "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_handlers_run_unchanged() {
    handlers_run_unchanged(Runtime::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handlers_run_unchanged() {
    handlers_run_unchanged(Runtime::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_timeouts_and_crashes_replace_the_worker() {
    failures_replace_the_worker(Runtime::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_timeouts_and_crashes_replace_the_worker() {
    failures_replace_the_worker(Runtime::Python).await;
}

/// SIGTERM stops the gateway and its workers with it: no orphan processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stop_with_the_gateway() {
    let mut gw = start(Runtime::Node).await;
    let mut ws = gw.connect().await;
    let answer = ask(&mut ws, serde_json::json!({"action": "echo", "text": "x"})).await;
    let pid = answer["pid"].as_u64().unwrap();
    assert!(PathBuf::from(format!("/proc/{pid}")).exists());
    drop(ws);
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "worker {pid} outlived the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL leaves the gateway no chance to stop its workers: the kernel kills them
/// (`setpriv --pdeathsig`), or the Node RIC would spin without its Runtime API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_a_killed_gateway() {
    let mut gw = start(Runtime::Node).await;
    let mut ws = gw.connect().await;
    let answer = ask(&mut ws, serde_json::json!({"action": "echo", "text": "x"})).await;
    let pid = answer["pid"].as_u64().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    gw.wait_exit(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "worker {pid} outlived the killed gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the gateway has logged `n` reloads.
async fn reloaded(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.raw_logs().matches("configuration reloaded").count() < n {
        assert!(Instant::now() < deadline, "no reload:\n{}", gw.raw_logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reload keeps the workers of a function whose settings did not change, and replaces
/// those of one that changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_functions_warm() {
    let gw = start(Runtime::Python).await;
    let started = |gw: &Gateway| {
        gw.logs()
            .iter()
            .filter(|l| l["message"] == "lambda worker started" && l["function"] == "echo-fn")
            .count()
    };
    let mut ws = gw.connect().await;
    let first = ask(&mut ws, serde_json::json!({"action": "echo", "text": 1})).await;
    assert_eq!(started(&gw), 2);

    gw.sighup();
    reloaded(&gw, 1).await;
    let mut ws = gw.connect().await;
    for n in 0..3 {
        let answer = ask(&mut ws, serde_json::json!({"action": "echo", "text": n})).await;
        assert_eq!(answer["memoryLimitInMB"], "256");
    }
    assert_eq!(started(&gw), 2, "same settings: the same warm workers");

    let config = std::fs::read_to_string(gw.config_path())
        .unwrap()
        .replace("memory_mb = 256", "memory_mb = 512");
    std::fs::write(gw.config_path(), config).unwrap();
    gw.sighup();
    reloaded(&gw, 2).await;
    let mut ws = gw.connect().await;
    let answer = ask(
        &mut ws,
        serde_json::json!({"action": "echo", "text": "new"}),
    )
    .await;
    assert_eq!(answer["memoryLimitInMB"], "512");
    assert_eq!(started(&gw), 4, "changed settings: new workers");
    assert_ne!(answer["pid"], first["pid"]);
}

/// A launcher that is not there fails `check-config` naming the key.
#[test]
fn a_missing_launcher_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    let config = config(Runtime::Node) + "[lambda]\nnode_ric = \"./no/such/aws-lambda-ric\"\n";
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lambda.node_ric"), "{stderr}");
}
