//! The chat example in a real browser: headless Chromium (Debian's `chromium`, driven by
//! playwright-core from tests/browser) opens two pages served by `examples/chat/server.py`;
//! each connects through a real haproxy to a different node of a three-node cluster with a
//! real redis-server. Messages must cross both ways, and closing one page must fire
//! `$disconnect` for it (the backend announces "bob left"). The screenshot is kept as
//! `target/test-artifacts/chat.png`.
//!
//! And on one node with resumable sessions (docs/resume.md): a page whose connection is
//! cut (a TCP reset, no close frame) while the other keeps talking reconnects, resumes
//! with the same id, and shows every message it missed exactly once
//! (`target/test-artifacts/chat-resumed.png`).
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn require(path: &str, what: &str) -> PathBuf {
    let full = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/")).join(path);
    assert!(
        full.exists(),
        "{what} is missing ({}): run scripts/test.sh, which installs it",
        full.display()
    );
    full
}

/// Debian's chromium (or `$CHROMIUM`) and playwright-core, both required.
fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test.sh, which installs Debian's chromium package"
    );
    require(
        "tests/browser/node_modules/playwright-core",
        "playwright-core",
    );
    chromium
}

/// `target/test-artifacts/<name>`, with no stale file there.
fn artifact(name: &str) -> PathBuf {
    let artifacts = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-artifacts"
    ));
    std::fs::create_dir_all(&artifacts).unwrap();
    let path = artifacts.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs a browser script (`node <script> <args…>`) with `chromium`; returns the JSON of
/// its last line, after asserting that it succeeded and said `"ok": true`.
async fn run_script(script: &str, args: Vec<String>, chromium: String) -> Value {
    let script = require(script, "the browser script");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args(args)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node must be installed (scripts/test.sh installs nodejs)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON result");
    assert_eq!(seen["ok"], true);
    seen
}

/// Asserts that `path` holds a PNG.
fn assert_png(path: &std::path::Path) {
    let png = std::fs::read(path).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_across_nodes() {
    let chromium = chromium();

    let redis = RedisServer::start().await;
    let backend_port = free_port();
    let management_port = free_port();
    let listen = format!("127.0.0.1:{management_port}");
    let redis_url = redis.url();
    let chat_url = format!("http://127.0.0.1:{backend_port}/events");
    let env = [
        ("SWITCHBOARD__CLUSTER__REDIS_URL", redis_url.as_str()),
        ("SWITCHBOARD__INTEGRATIONS__CHAT__URL", chat_url.as_str()),
        ("SWITCHBOARD__MANAGEMENT__BEARER_TOKENS", TOKEN),
    ];
    let config = compose_config();
    let mut first_env = env.to_vec();
    first_env.push(("SWITCHBOARD__MANAGEMENT__LISTEN", &listen));
    let a = Gateway::start_with_env(&config, &first_env).await;
    let b = Gateway::start_with_env(&config, &env).await;
    let c = Gateway::start_with_env(&config, &env).await;
    let mut nodes = Vec::new();
    for gw in [&a, &b, &c] {
        nodes.push(gw.wait_backplane_ready().await);
    }
    let mut haproxy = Haproxy::start(&[&a, &b, &c]);
    haproxy.wait_all_up(3).await;
    let _backend =
        ChatBackend::start(backend_port, &format!("http://{listen}"), &haproxy.ws_url()).await;

    let screenshot = artifact("chat.png");
    let page = format!("http://127.0.0.1:{backend_port}/");
    let args = vec![page, screenshot.display().to_string()];
    let seen = run_script("tests/browser/chat.mjs", args, chromium).await;
    assert_ne!(
        seen["alice"]["node"], seen["bob"]["node"],
        "the pages shared a node"
    );
    // Both connection ids belong to nodes of this cluster.
    for who in ["alice", "bob"] {
        let node = seen[who]["node"].as_str().unwrap();
        assert!(
            nodes.iter().any(|n| n == node),
            "{who} on unknown node {node}: {nodes:?}"
        );
    }
    assert_png(&screenshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_resumes_after_losing_its_connection() {
    let chromium = chromium();
    let backend_port = free_port();
    let chat_url = format!("http://127.0.0.1:{backend_port}/events");
    let config = require(
        "examples/chat/switchboard.toml",
        "the chat example's configuration",
    );
    let gw = Gateway::start_file(
        &config,
        &[
            ("SWITCHBOARD__INTEGRATIONS__CHAT__URL", chat_url.as_str()),
            ("SWITCHBOARD__MANAGEMENT__BEARER_TOKENS", TOKEN),
        ],
    )
    .await;
    let gateway = gw.ws_url("/prod");
    let _backend = ChatBackend::start(backend_port, &gw.management_url(""), &gateway).await;

    let screenshot = artifact("chat-resumed.png");
    let page = format!("http://127.0.0.1:{backend_port}/");
    let args = vec![page, gateway, screenshot.display().to_string()];
    let seen = run_script("tests/browser/resume.mjs", args, chromium).await;
    assert_eq!(seen["missed"], 10);
    assert_png(&screenshot);
}
