//! An unmodified AWS SDK against the management API: boto3's `apigatewaymanagementapi`
//! client (from PyPI, SigV4, `endpoint_url` = the management URL + `/prod`) posts to,
//! describes and deletes a live connection (tests/python/boto3_post.py). scripts/test.sh
//! installs boto3 into target/pyvenv and exports SWITCHBOARD_TEST_VENV.
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const AKID: &str = "AKIDBOTO3TEST";
const SECRET: &str = "boto3/Secret+Key0123456789abcdefEXAMPLE";
const REGION: &str = "eu-west-3";

fn python() -> PathBuf {
    let venv = std::env::var("SWITCHBOARD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv")));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/python/requirements.txt (boto3) into target/pyvenv",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_posts_gets_and_deletes_a_live_connection() {
    let python = python();
    let config = format!(
        "[management]\nauth = \"sigv4\"\n[management.sigv4]\nregion = \"{REGION}\"\naccess_keys = [\"{AKID}:{SECRET}\"]\n{WHOAMI}"
    );
    let gw = Gateway::start(&config).await;
    let (mut ws, id) = gw.connect_with_id().await;
    let endpoint = gw.management_url("/prod");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/boto3_post.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([
                "--endpoint",
                &endpoint,
                "--region",
                REGION,
                "--connection-id",
                &id,
            ])
            .env("AWS_ACCESS_KEY_ID", AKID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            // Nothing but the arguments: no profile, no instance metadata.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .expect("run python")
    });
    // The post arrives while the script goes on.
    assert_eq!(next_text(&mut ws).await, "hello from boto3");
    let output = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.trim()).expect("script prints JSON");
    assert_eq!(out["post"], "ok");
    assert_eq!(out["get"]["sourceIp"], "127.0.0.1");
    assert!(
        out["get"]["connectedAt"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );
    assert_eq!(out["forged"]["status"], 403);
    assert_eq!(out["forged"]["code"], "InvalidSignatureException");
    assert_eq!(out["wrong_region"]["status"], 403);
    assert_eq!(out["wrong_region"]["code"], "InvalidSignatureException");
    assert_eq!(out["delete"], "ok");
    assert_eq!(out["after_delete"]["status"], 410);
    assert_eq!(out["after_delete"]["code"], "GoneException");
    let close = expect_close(&mut ws, Duration::from_secs(3))
        .await
        .expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    assert!(
        !gw.raw_logs().contains(SECRET),
        "the secret appears in the logs"
    );
}
