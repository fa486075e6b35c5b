//! Cluster mode's Redis: [`RedisServer`], a real `redis-server` the test can stop and start
//! again, the configuration of a cluster node on it, and the node tag inside a connection
//! id.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Gateway, WHOAMI, base_config};

/// A real `redis-server` on a free port in a temporary directory, nothing kept on disk.
/// It can be stopped and started again on the same port (empty, as after a restart).
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port, empty.
    pub async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read as _, Write as _};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a redis-cli command; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config for a cluster node on `redis` with a short lease, plus `extra` sections.
pub fn cluster_config(redis: &RedisServer, extra: &str) -> String {
    format!(
        "{}\n[cluster]\nredis_url = \"{}\"\nlease_ttl_ms = 1500\nrequest_timeout_ms = 1000\n{extra}",
        base_config(),
        redis.url()
    )
}

/// The node tag (8 hex digits) embedded in a connection id: its first 4 bytes.
pub fn node_of(connection_id: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(connection_id)
        .unwrap_or_else(|e| panic!("connection id {connection_id:?} is not base64url: {e}"));
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts `n` nodes on `redis` with `extra` config and waits until each is subscribed and
/// registered.
pub async fn nodes(redis: &RedisServer, n: usize, extra: &str) -> Vec<Gateway> {
    start_nodes(&cluster_config(redis, &format!("{WHOAMI}{extra}")), n).await
}

/// Starts `n` nodes with `config` and waits until each is ready on the backplane.
pub async fn start_nodes(config: &str, n: usize) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(Gateway::start(config).await);
    }
    for gw in &gws {
        gw.wait_backplane_ready().await;
    }
    gws
}
