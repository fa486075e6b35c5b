//! docs/openapi.yaml stays true: schemathesis (PyPI) generates requests from the spec and
//! checks every answer of a live gateway against it. scripts/test.sh installs schemathesis
//! into target/pyvenv and exports SWITCHBOARD_TEST_VENV.
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var("SWITCHBOARD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv")));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/python/requirements.txt into target/pyvenv",
        tool.display()
    );
    tool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_matches_its_openapi_spec() {
    let st = venv_tool("st");
    let config = format!("{}{WHOAMI}", base_config());
    let gw = Gateway::start(&config).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let url = gw.management_url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(root)
            .env("SCHEMATHESIS_HOOKS", "")
            .args([
                "--config-file",
                "tests/schemathesis/schemathesis.toml",
                "run",
                "docs/openapi.yaml",
            ])
            .args(["--url", &url])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "missing_required_header",
            ])
            // Draining would stop the gateway under test.
            .args(["--exclude-path", "/admin/drain"])
            .args(["--max-examples", "40", "--seed", "1", "--no-color"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found disagreements between docs/openapi.yaml and the gateway:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("passed"),
        "schemathesis ran no test:\n{stdout}"
    );
}
