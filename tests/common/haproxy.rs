//! [`Haproxy`]: a real `haproxy` balancing WebSocket clients over gateway processes, with
//! health checks on `/readyz` and its stats page to tell when every node is UP.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Gateway;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `haproxy -db` with its configuration in a temporary directory.
pub struct Haproxy {
    child: Child,
    /// The frontend (WebSocket clients connect here).
    pub port: u16,
    /// The stats page (CSV at `/stats;csv`).
    pub stats_port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes a configuration balancing over `nodes` and starts haproxy in the foreground.
    pub fn start(nodes: &[&Gateway]) -> Haproxy {
        if Command::new("haproxy").arg("-v").output().is_err() {
            panic!(
                "`haproxy` is not installed or not on PATH: run scripts/test.sh, which installs \
                 it, or `apt-get install haproxy`"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let (port, stats_port) = (free_port(), free_port());
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, gw)| {
                format!(
                    "    server node{i} {} check port {}\n",
                    gw.client_addr,
                    gw.management_addr.port()
                )
            })
            .collect();
        let config = format!(
            "global\n\
             \x20   maxconn 1000\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\
             \x20   timeout http-request 5s\n\
             \x20   timeout tunnel 1h\n\
             frontend websocket\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend gateways\n\
             backend gateways\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk GET /readyz\n\
             \x20   http-check expect ! string draining\n\
             \x20   option redispatch\n\
             \x20   retries 2\n\
             \x20   default-server inter 200ms fall 2 rise 1\n\
             {servers}\
             listen stats\n\
             \x20   bind 127.0.0.1:{stats_port}\n\
             \x20   stats enable\n\
             \x20   stats uri /stats\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        check_haproxy_config(&path);
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn haproxy");
        Haproxy {
            child,
            port,
            stats_port,
            _dir: dir,
        }
    }

    /// Waits (up to 10 s) until every server is UP after a passing HTTP check (`L7OK`).
    pub async fn wait_all_up(&mut self, servers: usize) {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/stats;csv", self.stats_port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("haproxy exited: {status}");
            }
            if let Ok(r) = http.get(&url).send().await {
                last = r.text().await.unwrap_or_default();
                if servers_up(&last) == servers {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy servers not all UP:\n{last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ws://127.0.0.1:port/prod` through haproxy.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/prod", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `haproxy -c` accepts the file.
fn check_haproxy_config(path: &std::path::Path) {
    let out = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(path)
        .output()
        .expect("haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c refused the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Servers of backend `gateways` that the stats CSV shows UP with a passing layer-7 check.
fn servers_up(csv: &str) -> usize {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return 0 };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st), Some(check)) = (
        col("pxname"),
        col("svname"),
        col("status"),
        col("check_status"),
    ) else {
        return 0;
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| {
            f.get(px) == Some(&"gateways")
                && f.get(sv).is_some_and(|s| s.starts_with("node"))
                && f.get(st) == Some(&"UP")
                && f.get(check) == Some(&"L7OK")
        })
        .count()
}
