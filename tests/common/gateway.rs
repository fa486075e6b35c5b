//! The gateway under test as a real process: the `switchboard` binary started on
//! 127.0.0.1:0 with a configuration written to a temporary file, its JSON log lines
//! collected, and signals (SIGTERM, SIGHUP, SIGKILL) sent to it. Also the configuration
//! pieces every test builds on ([`TOKEN`], [`base_config`], [`WHOAMI`]).
//!
//! What a test does through the listeners (connect clients, call the management API) is on
//! [`Endpoints`], which `Gateway` derefs to; this file only owns the process.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::Endpoints;

/// The management token every test configuration uses.
pub const TOKEN: &str = "test-token-0123456789";

/// The start of every test configuration: no routes, bearer auth with [`TOKEN`].
pub fn base_config() -> String {
    format!("[management]\nauth = \"bearer\"\nbearer_tokens = [\"{TOKEN}\"]\n")
}

/// The `whoami` route and its mock integration, for `connect_with_id`.
pub const WHOAMI: &str = "[routes.whoami]\nintegration = \"whoami\"\ntwo_way = true\n[integrations.whoami]\ntype = \"mock\"\ntemplate = '{\"connectionId\": \"$context.connectionId\"}'\n";

/// The compose kit's gateway configuration, run as is: only addresses (and the token)
/// are overridden from the environment, as a deployment would.
pub fn compose_config() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/switchboard.toml"
    ))
    .expect("deploy/switchboard.toml")
}

/// A running gateway process. Derefs to its [`Endpoints`] (`client_addr`, `connect`,
/// `post`, …).
pub struct Gateway {
    child: Child,
    /// Where it listens.
    endpoints: Endpoints,
    /// Every log line the process printed so far (JSON).
    logs: Arc<Mutex<Vec<String>>>,
    /// The configuration file.
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
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
        Self::spawn(dir, path, env).await
    }

    /// Starts the binary with the configuration file at `path`, as it is (relative paths in
    /// it stay relative to its directory), with extra environment variables (which may
    /// override the listeners' addresses).
    pub async fn start_file(path: &std::path::Path, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn(dir, path.to_owned(), env).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        path: std::path::PathBuf,
        env: &[(&str, &str)],
    ) -> Gateway {
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
            endpoints: Endpoints::new(client_addr.unwrap(), management_addr.unwrap()),
            logs,
            config: path,
            _dir: dir,
        }
    }

    /// The configuration file the process was started with (rewrite it, then `sighup`).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.config.clone()
    }

    /// A scratch directory that lives as long as the gateway.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    // ---- Logs ----

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

    /// How many log lines so far have `message` exactly.
    pub fn count_logs(&self, message: &str) -> usize {
        self.logs()
            .iter()
            .filter(|v| v["message"] == message)
            .count()
    }

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

    // ---- Signals and exit ----

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.kill("-TERM");
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) {
        self.kill("-HUP");
    }

    /// Sends SIGKILL (no shutdown, no deregistration: as a crash) and waits for the exit.
    pub async fn sigkill(&mut self) {
        self.kill("-KILL");
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

    /// Runs `kill {signal} {pid}`; asserts it succeeded.
    fn kill(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
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
}

impl Deref for Gateway {
    type Target = Endpoints;

    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchboard check-config` on `text`: (exit code, stdout, stderr).
pub fn check_config(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candidate.toml");
    std::fs::write(&path, text).unwrap();
    check_config_file(&path)
}

/// Runs `switchboard check-config` on a file: (exit code, stdout, stderr).
pub fn check_config_file(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check-config")
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run switchboard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
