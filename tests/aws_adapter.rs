//! An AWS Lambda handler runs unchanged behind Switchboard: examples/aws-adapter/adapter.py
//! hosts examples/aws-adapter/chat_handler.py (AWS chat-sample style), which answers
//! `$connect`/`$disconnect` and, on `sendmessage`, calls
//! `ApiGatewayManagementApi.post_to_connection` with the official AWS SDK (boto3) — signed
//! with SigV4, over TLS, to the endpoint it builds from the event as it would on AWS.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt as _;
use tokio_tungstenite::tungstenite::Message;

const ACCESS_KEY: &str = "AKIDSWITCHBOARDTEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSWITCHBOARD";

struct Adapter(Child);

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> std::path::PathBuf {
    let venv = std::env::var("SWITCHBOARD_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv").into());
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (it installs boto3)",
        python.display()
    );
    python
}

#[tokio::test]
async fn lambda_chat_handler_runs_unchanged() {
    let root = env!("CARGO_MANIFEST_DIR");
    let adapter_port = free_port();
    let config = format!(
        r#"
[management]
auth = "sigv4"
[management.sigv4]
region = "us-east-1"
access_keys = ["{ACCESS_KEY}:{SECRET}"]
[management.tls]
cert_file = "{root}/tests/fixtures/tls/cert.pem"
key_file = "{root}/tests/fixtures/tls/key.pem"
[routes."$connect"]
integration = "lambda"
[routes."$disconnect"]
integration = "lambda"
[routes.sendmessage]
integration = "lambda"
[integrations.lambda]
type = "http"
url = "http://127.0.0.1:{adapter_port}/"
"#
    );
    let gw = Gateway::start(&config).await;
    let child = Command::new(python())
        .arg(format!("{root}/examples/aws-adapter/adapter.py"))
        .env("HANDLER", "chat_handler.handler")
        .env("PORT", adapter_port.to_string())
        .env(
            "CALLBACK_DOMAIN",
            format!("127.0.0.1:{}", gw.management_addr.port()),
        )
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", format!("{root}/tests/fixtures/tls/ca.pem"))
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the adapter");
    let mut adapter = Adapter(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", adapter_port)).is_err() {
        if let Some(status) = adapter.0.try_wait().unwrap() {
            panic!("adapter exited: {status}");
        }
        assert!(Instant::now() < deadline, "adapter did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // $connect runs the handler for each client (a crash would refuse the handshake).
    let mut alice = gw.connect().await;
    let mut bob = gw.connect().await;

    // sendmessage: the handler posts to every connection it remembers, through boto3.
    alice
        .send(Message::text(
            r#"{"action":"sendmessage","data":"hello everyone"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice).await, "hello everyone");
    assert_eq!(next_text(&mut bob).await, "hello everyone");

    // $disconnect makes the handler forget bob; the next message reaches alice only.
    bob.close(None).await.unwrap();
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .send(Message::text(
            r#"{"action":"sendmessage","data":"just you"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice).await, "just you");

    // The calls were SigV4-signed management calls over TLS.
    let posts = gw
        .logs()
        .iter()
        .filter(|l| {
            l["message"] == "management call" && l["method"] == "POST" && l["status"] == 200
        })
        .count();
    assert_eq!(posts, 3, "three post_to_connection calls answered 200");
}
