//! The JavaScript client of resumable sessions (`clients/js`, docs/resume.md) against the
//! real binary: its own tests (`clients/js/test`, Node's test runner) run with a gateway
//! that offers `switchboard.resume.v1` — a connection cut by a TCP proxy mid-stream
//! resumes with every message once and in order, a resume after the window starts fresh,
//! a close frame ends the session.
mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_passes_its_tests_against_the_gateway() {
    let config = format!(
        "{}[resume]\nenabled = true\nwindow_secs = 2\n\
         [routes.\"$default\"]\nintegration = \"echo\"\ntwo_way = true\n\
         [integrations.echo]\ntype = \"mock\"\ntemplate = \"$input.body\"\n",
        base_config()
    );
    let gw = Gateway::start(&config).await;
    let ws_url = gw.ws_url("/prod");
    let management = gw.management_url("");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--experimental-websocket", "--test", "test/"])
            .current_dir(dir)
            .env("SWITCHBOARD_WS_URL", ws_url)
            .env("SWITCHBOARD_MANAGEMENT_URL", management)
            .env("SWITCHBOARD_TOKEN", TOKEN)
            .output()
            .expect("node must be installed (scripts/test.sh installs nodejs)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "clients/js tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every test ran: none was skipped for want of a gateway.
    assert!(stdout.contains("# skipped 0"), "{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
