//! Operations (issue 7) through the real binary: metrics move with traffic, the access
//! log writes the configured fields, draining closes clients with 1012 while readiness
//! fails, and a reload under live connections changes routing without closing a socket.
mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn echo_config(extra: &str) -> String {
    format!(
        "{}{WHOAMI}\n[routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n[integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n{extra}",
        base_config()
    )
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let backend = Backend::with(|_| (200, "from backend".into())).await;
    let config = echo_config(&format!(
        "[routes.slow]\nintegration = \"http\"\ntwo_way = true\n[integrations.http]\ntype = \"http\"\nurl = \"{}\"\n",
        backend.url("/")
    ));
    let gw = Gateway::start(&config).await;
    let before = gw.metrics().await;
    assert_eq!(sample(&before, "switchboard_connections", &[]), 0.0);

    let (mut ws, id) = gw.connect_with_id().await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.send(Message::text(r#"{"action":"slow"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "from backend");
    assert_eq!(gw.post(&id, "pushed").await.0, 200);
    assert_eq!(next_text(&mut ws).await, "pushed");

    let after = gw.metrics().await;
    assert_eq!(sample(&after, "switchboard_connections", &[]), 1.0);
    assert_eq!(sample(&after, "ConnectCount", &["stage=\"prod\""]), 1.0);
    assert_eq!(
        sample(
            &after,
            "MessageCount",
            &["route=\"$default\"", "direction=\"in\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "MessageCount",
            &["route=\"slow\"", "direction=\"in\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "MessageCount",
            &["route=\"whoami\"", "direction=\"in\""]
        ),
        1.0
    );
    assert!(
        sample(&after, "MessageCount", &["direction=\"out\""]) >= 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "IntegrationLatency_count", &["route=\"slow\""]),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "switchboard_handshakes_total", &["status=\"101\""]),
        1.0
    );
    assert_eq!(sample(&after, "switchboard_backplane_connected", &[]), 0.0);
    assert!(
        after.contains("api_id=\"switchboard\""),
        "global api_id label"
    );

    // No route and no $default elsewhere: a ClientError; a refused handshake: its status.
    let _ = reqwest::get(gw.management_url("/healthz")).await.unwrap();
    let r = reqwest::get(format!("http://{}/prod", gw.client_addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if sample(&m, "switchboard_connections", &[]) == 0.0 {
            assert_eq!(
                sample(&m, "switchboard_handshakes_total", &["status=\"426\""]),
                1.0
            );
            assert!(
                sample(&m, "switchboard_disconnects_total", &[]) >= 1.0,
                "{m}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connection gauge never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_need_credentials() {
    let gw = Gateway::start(&echo_config("")).await;
    let r = reqwest::get(gw.management_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn client_and_execution_errors_are_counted() {
    let config = format!(
        "{}{WHOAMI}\n[routes.down]\nintegration = \"down\"\ntwo_way = true\n[integrations.down]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let mut ws = gw.connect().await;
    ws.send(Message::text(r#"{"action":"nothing"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.contains("Forbidden"));
    ws.send(Message::text(r#"{"action":"down"}"#))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.contains("Internal server error"));
    let m = gw.metrics().await;
    assert_eq!(
        sample(&m, "ClientError", &["reason=\"no_route\""]),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "ExecutionError",
            &["route=\"down\"", "reason=\"unreachable\""]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn access_log_lines_have_the_configured_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let config = echo_config(&format!(
        "[access_log]\nenabled = true\ndestination = \"{}\"\n",
        path.display()
    ));
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hi");
    ws.close(None).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        if lines.iter().any(|l| l["eventType"] == "DISCONNECT") {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DISCONNECT line: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["CONNECT", "MESSAGE", "MESSAGE", "DISCONNECT"]);
    for line in &lines {
        assert_eq!(line["connectionId"], id.as_str());
        assert_eq!(line["ip"], "127.0.0.1");
        assert_eq!(line["requestId"].as_str().unwrap().len(), 16);
        assert!(line["requestTime"].as_str().unwrap().ends_with(" +0000"));
    }
    assert_eq!(lines[0]["status"], "101");
    assert_eq!(lines[0]["routeKey"], "$connect");
    assert_eq!(lines[1]["routeKey"], "whoami");
    assert_eq!(lines[2]["routeKey"], "$default");
    assert_eq!(lines[2]["status"], "200");
    assert_ne!(lines[2]["integrationLatency"], "");
    assert_eq!(lines[3]["routeKey"], "$disconnect");
}

#[tokio::test]
async fn access_log_format_is_configurable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let config = echo_config(&format!(
        "[access_log]\nenabled = true\ndestination = \"{}\"\nformat = \"$context.eventType $context.routeKey $context.disconnectStatusCode\"\n",
        path.display()
    ));
    let gw = Gateway::start(&config).await;
    let mut ws = gw.connect().await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4001.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("DISCONNECT") {
            assert_eq!(text, "CONNECT $connect \nDISCONNECT $disconnect 4001\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DISCONNECT line: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[management]\nauth = \"none\"\n[access_log]\nformat = \"$context.bogus\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check_config_file(&bad);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("access_log.format") && stderr.contains("bogus"),
        "{stderr}"
    );
}

#[tokio::test]
async fn readyz_and_healthz() {
    let gw = Gateway::start(&echo_config("")).await;
    let r = reqwest::get(gw.management_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
    let r = reqwest::get(gw.management_url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readyz_fails_without_the_backplane() {
    let mut redis = RedisServer::start().await;
    let gw = Gateway::start(&cluster_config(&redis, "")).await;
    gw.wait_registered().await;
    let ready = |gw: &Gateway| {
        let url = gw.management_url("/readyz");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(&gw).await, 200);
    redis.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ready(&gw).await != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "readyz stayed 200 without Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.start_again().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ready(&gw).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn drain_closes_gradually_with_1012_while_readiness_fails() {
    let backend = Backend::start().await;
    let config = echo_config(&format!(
        "[server]\ndrain_period_secs = 2\n[routes.\"$disconnect\"]\nintegration = \"rec\"\n[integrations.rec]\ntype = \"http\"\nurl = \"{}\"\n",
        backend.url("/")
    ));
    let mut gw = Gateway::start(&config).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(gw.connect().await);
    }
    let r = gw.request(reqwest::Method::POST, "/admin/drain", "").await;
    assert_eq!(r.status(), 202);
    let r = reqwest::get(gw.management_url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "draining");
    // The listener no longer accepts new clients.
    assert!(
        tokio_tungstenite::connect_async(gw.ws_url("/prod"))
            .await
            .is_err()
    );

    let started = std::time::Instant::now();
    let waits = clients.iter_mut().map(|ws| async move {
        let frame = expect_close(ws, Duration::from_secs(6))
            .await
            .expect("close frame");
        assert_eq!(u16::from(frame.code), 1012);
        assert_eq!(frame.reason.as_str(), "Service restart");
        started.elapsed()
    });
    let closed_at = futures_util::future::join_all(waits).await;
    let first = closed_at.iter().min().unwrap();
    let last = closed_at.iter().max().unwrap();
    assert!(
        *last - *first >= Duration::from_millis(800),
        "closes were not spread: {closed_at:?}"
    );
    for _ in 0..10 {
        let event = backend.next_event("DISCONNECT").await;
        assert_eq!(event["requestContext"]["disconnectStatusCode"], 1012);
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn sigterm_with_a_drain_period_drains_with_1012() {
    let config = echo_config("[server]\ndrain_period_secs = 1\n");
    let mut gw = Gateway::start(&config).await;
    let mut ws = gw.connect().await;
    gw.sigterm();
    let frame = expect_close(&mut ws, Duration::from_secs(5))
        .await
        .expect("close frame");
    assert_eq!(u16::from(frame.code), 1012);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn reload_changes_routing_without_closing_sockets() {
    let gw = Gateway::start(&echo_config("")).await;
    let (mut ws, _) = gw.connect_with_id().await;
    ws.send(Message::text(r#"{"action":"greet"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"action":"greet"}"#,
        "echo before reload"
    );

    // Add a `greet` route and reload.
    let new = echo_config(
        "[routes.greet]\nintegration = \"hello\"\ntwo_way = true\n[integrations.hello]\ntype = \"mock\"\ntemplate = \"hello from the new config\"\n",
    );
    std::fs::write(gw.config_path(), new).unwrap();
    gw.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.raw_logs().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws.send(Message::text(r#"{"action":"greet"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hello from the new config");
    assert_eq!(
        sample(
            &gw.metrics().await,
            "switchboard_config_reloads_total",
            &["result=\"ok\""]
        ),
        1.0
    );

    // An invalid file is refused, naming the key; the running configuration stays.
    std::fs::write(
        gw.config_path(),
        echo_config("[client]\nidle_timeout_secs = 0\n"),
    )
    .unwrap();
    gw.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gw.raw_logs().contains("configuration reload refused") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gw.raw_logs().contains("client.idle_timeout_secs"));
    ws.send(Message::text(r#"{"action":"greet"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hello from the new config");
    assert_eq!(
        sample(
            &gw.metrics().await,
            "switchboard_config_reloads_total",
            &["result=\"error\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn watched_config_reloads_on_change() {
    let gw = Gateway::start(&echo_config("[server]\nwatch_config = true\n")).await;
    let mut ws = gw.connect().await;
    // Make sure the modification time changes even on coarse-grained filesystems.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        gw.config_path(),
        format!(
            "{}\n[server]\nwatch_config = true\n[routes.\"$default\"]\nintegration = \"x\"\ntwo_way = true\n[integrations.x]\ntype = \"mock\"\ntemplate = \"changed\"\n",
            base_config()
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while !gw.raw_logs().contains("configuration reloaded") {
        assert!(
            std::time::Instant::now() < deadline,
            "the watched file was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.send(Message::text("anything")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "changed");
}
