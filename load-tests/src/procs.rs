//! Child processes a scenario measures or needs: the Switchboard gateway (release binary,
//! generated configuration), the bare baseline echo server, the HTTP backend and
//! redis-server. Owns starting them on free loopback ports, reading their addresses,
//! reading their memory from /proc, and stopping them (every child dies with its handle).

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

/// The management token of every generated gateway configuration.
pub const TOKEN: &str = "loadgen-token-7c1f3e9a";

/// How long a child may take to report its listening address.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Where this workspace's target directory is (load-tests/ is one level below the root).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The gateway binary: `explicit`, else `$SWITCHBOARD_BIN`, else `target/release/switchboard`.
pub fn gateway_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match std::env::var_os("SWITCHBOARD_BIN") {
            Some(p) => PathBuf::from(p),
            None => workspace_root().join("target/release/switchboard"),
        },
    };
    if !path.is_file() {
        bail!(
            "gateway binary {} not found: build it with `cargo build --release -p switchboard` \
             or pass --gateway PATH (or set SWITCHBOARD_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// A command that raises its open-files soft limit to the hard limit, then execs `program`.
/// Every server child runs this way: 15,000 connections need more than a default 1024.
fn with_raised_nofile(program: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@""#)
        .arg("sh")
        .arg(program);
    command
}

/// This process's open-files limits (soft, hard) from `/proc/self/limits`
/// ("unlimited" is `u64::MAX`).
pub fn nofile_limits() -> Result<(u64, u64)> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| anyhow!("no \"Max open files\" in /proc/self/limits"))?;
    let mut values = line["Max open files".len()..].split_whitespace().map(|v| {
        if v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse::<u64>()
        }
    });
    match (values.next(), values.next()) {
        (Some(Ok(soft)), Some(Ok(hard))) => Ok((soft, hard)),
        _ => bail!("unreadable open-files limits: {line}"),
    }
}

/// Set in the environment of a loadgen that re-ran itself with a raised open-files limit.
const NOFILE_RAISED: &str = "LOADGEN_NOFILE_RAISED";

/// Makes sure this process may open as many files as its hard limit allows: when the soft
/// limit is lower, runs this same command again through `sh -c 'ulimit -n "$(ulimit -Hn)";
/// exec …'` (as the server children are started: no unsafe code here) and never returns,
/// unless that fails. Once only (an environment variable marks the second run). Call it
/// before starting any thread.
pub fn raise_nofile_by_reexec() -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let (soft, hard) = nofile_limits()?;
    if soft >= hard || std::env::var_os(NOFILE_RAISED).is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating loadgen itself")?;
    let error = with_raised_nofile(&exe)
        .args(std::env::args_os().skip(1))
        .env(NOFILE_RAISED, "1")
        .exec();
    Err(anyhow!(error).context(format!(
        "re-running with open files raised from {soft} to {hard}"
    )))
}

/// The last lines a child printed, for error messages.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == 40 {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, joined.
    pub fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Drains a child's stderr into `tail` on a thread (a full pipe would block the child).
fn drain_stderr(child: &mut Child, tail: &Tail) {
    if let Some(stderr) = child.stderr.take() {
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                tail.push(line);
            }
        });
    }
}

/// Reads stdout lines on a thread: each is kept in `tail` and offered to `parse`; what
/// `parse` returns is sent on the channel.
fn watch_stdout<T: Send + 'static>(
    stdout: ChildStdout,
    tail: &Tail,
    parse: impl Fn(&str) -> Option<T> + Send + 'static,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    let tail = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = parse(&line) {
                let _ = tx.send(found);
            }
            tail.push(line);
        }
    });
    rx
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Resident memory of a process in KiB (VmRSS from /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time a process has used so far, in microseconds: the sum over its threads of the
/// run time in `/proc/<pid>/task/<tid>/schedstat` (nanoseconds, unlike the clock ticks of
/// `/proc/<pid>/stat`). Threads that already exited are not counted.
pub fn cpu_us(pid: u32) -> Result<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ns / 1000)
}

/// Sends SIGTERM (through kill(1): no unsafe code here) and waits up to `grace`; then SIGKILL.
fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What the `$default` route of a generated configuration calls.
#[derive(Clone, Debug)]
pub enum DefaultRoute {
    /// The mock echo integration (`$input.body`), two-way.
    MockEcho,
    /// An HTTP integration in proxy mode at this URL, two-way.
    HttpProxy(String),
}

/// The knobs of a generated gateway configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `$default` integration.
    pub default_route: DefaultRoute,
    /// Add a `$connect` route answered by a mock integration (status 200).
    pub mock_connect: bool,
    /// `cluster.redis_url` and `cluster.key_prefix`, for cluster mode.
    pub redis: Option<(String, String)>,
    /// `client.read_buffer_bytes`; `None` keeps the gateway's default.
    pub read_buffer_bytes: Option<usize>,
    /// `cluster.lease_ttl_ms` (with `redis` only); `None` keeps the gateway's default.
    pub lease_ttl_ms: Option<u64>,
    /// `Some(window_secs)`: resumable sessions on (`[resume]`, docs/resume.md).
    pub resume_window_secs: Option<u64>,
}

impl GatewayConfig {
    /// Mock echo on `$default`, whoami, no `$connect`, one node.
    pub fn echo() -> Self {
        GatewayConfig {
            default_route: DefaultRoute::MockEcho,
            mock_connect: false,
            redis: None,
            read_buffer_bytes: None,
            lease_ttl_ms: None,
            resume_window_secs: None,
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let mut s = String::new();
        s.push_str(
            r#"# Generated by loadgen: generous limits, quiet logs (the listening lines stay visible).
[api]
route_selection_expression = "$request.body.action"

[client]
idle_timeout_secs = 3600
max_lifetime_secs = 7200
handshake_timeout_ms = 30000
max_inflight_per_connection = 64
outbound_queue_messages = 4096
outbound_queue_bytes = 4194304
"#,
        );
        if let Some(bytes) = self.read_buffer_bytes {
            s.push_str(&format!("read_buffer_bytes = {bytes}\n"));
        }
        s.push_str(&format!(
            r#"
[management]
auth = "bearer"
bearer_tokens = ["{TOKEN}"]

[log]
level = "warn,switchboard::app=info"
format = "json"

[server]
shutdown_grace_secs = 5
"#
        ));
        if let Some((url, prefix)) = &self.redis {
            s.push_str(&format!(
                "\n[cluster]\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\n"
            ));
            if let Some(ttl) = self.lease_ttl_ms {
                s.push_str(&format!("lease_ttl_ms = {ttl}\n"));
            }
        }
        if let Some(window) = self.resume_window_secs {
            s.push_str(&format!(
                "\n[resume]\nenabled = true\nwindow_secs = {window}\nmax_suspended = 1000000\n"
            ));
        }
        let default_integration = match &self.default_route {
            DefaultRoute::MockEcho => "echo",
            DefaultRoute::HttpProxy(_) => "backend",
        };
        s.push_str(&format!(
            r#"
[routes."$default"]
integration = "{default_integration}"
two_way = true

[routes.whoami]
integration = "whoami"
two_way = true

[integrations.echo]
type = "mock"
template = "$input.body"
status = 200

[integrations.whoami]
type = "mock"
template = '{{"connectionId": "$context.connectionId"}}'
status = 200
"#
        ));
        if let DefaultRoute::HttpProxy(url) = &self.default_route {
            s.push_str(&format!(
                "\n[integrations.backend]\ntype = \"http\"\nurl = \"{url}\"\nmode = \"proxy\"\ntimeout_ms = 29000\n"
            ));
        }
        if self.mock_connect {
            s.push_str(
                "\n[routes.\"$connect\"]\nintegration = \"connect_ok\"\n\n[integrations.connect_ok]\ntype = \"mock\"\ntemplate = \"ok\"\nstatus = 200\n",
            );
        }
        s
    }
}

/// Distinguishes the configuration files of gateways started by one loadgen process.
static NEXT_CONFIG: AtomicU32 = AtomicU32::new(0);

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    /// WebSocket listener.
    pub client_addr: SocketAddr,
    /// Management listener.
    pub management_addr: SocketAddr,
    config_path: PathBuf,
    tail: Tail,
}

impl Gateway {
    /// Starts `binary` with `config` on 127.0.0.1:0 listeners and waits for both addresses.
    pub fn start(binary: &Path, config: &GatewayConfig) -> Result<Gateway> {
        Self::start_toml(binary, &config.toml())
    }

    /// [`Gateway::start`] with configuration text of the caller's own (e.g. a generated
    /// configuration with a section appended).
    pub fn start_toml(binary: &Path, toml: &str) -> Result<Gateway> {
        let n = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let config_path =
            std::env::temp_dir().join(format!("loadgen-{}-{n}.toml", std::process::id()));
        std::fs::write(&config_path, toml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut child = with_raised_nofile(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("SWITCHBOARD__CLIENT__LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD__MANAGEMENT__LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let tail = Tail::default();
        drain_stderr(&mut child, &tail);
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let rx = watch_stdout(stdout, &tail, |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            if v["message"] != "listening" {
                return None;
            }
            let name = v["listener"].as_str()?.to_owned();
            let addr: SocketAddr = v["addr"].as_str()?.parse().ok()?;
            Some((name, addr))
        });
        let mut gateway = Gateway {
            child,
            client_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            management_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            config_path,
            tail,
        };
        let (mut client, mut management) = (None, None);
        let deadline = Instant::now() + START_LIMIT;
        while client.is_none() || management.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((name, addr)) if name == "client" => client = Some(addr),
                Ok((_, addr)) => management = Some(addr),
                Err(_) => bail!(
                    "the gateway did not report its listeners within {START_LIMIT:?}; its output:\n{}",
                    gateway.tail.text()
                ),
            }
        }
        gateway.client_addr = client.unwrap_or(gateway.client_addr);
        gateway.management_addr = management.unwrap_or(gateway.management_addr);
        Ok(gateway)
    }

    /// The process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no drain, no lease handed back: a crash) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("killing the gateway")?;
        self.child.wait().context("reaping the gateway")?;
        Ok(())
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "the gateway exited ({status}); its output:\n{}",
                self.tail.text()
            );
        }
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(8));
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// A helper child of this same binary (baseline server, HTTP backend) that prints
/// `{"listening":"addr"}` first; killed on drop.
pub struct Helper {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Helper {
    /// Runs `loadgen <args…>` and waits for its listening line.
    pub fn start(args: &[&str]) -> Result<Helper> {
        let exe = std::env::current_exe().context("locating loadgen itself")?;
        let mut child = with_raised_nofile(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting loadgen {}", args.join(" ")))?;
        let tail = Tail::default();
        drain_stderr(&mut child, &tail);
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let rx = watch_stdout(stdout, &tail, |line| {
            let v: Value = serde_json::from_str(line).ok()?;
            v["listening"].as_str()?.parse::<SocketAddr>().ok()
        });
        let Ok(addr) = rx.recv_timeout(START_LIMIT) else {
            let mut child = child;
            let _ = child.kill();
            bail!("loadgen {} did not start: {}", args.join(" "), tail.text());
        };
        Ok(Helper { child, addr })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway redis-server on a free port (no persistence); killed on drop.
pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl Redis {
    /// Starts `redis-server` and waits until it answers PING.
    pub fn start() -> Result<Redis> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (install it: apt-get install redis-server)")?;
        let redis = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return Ok(redis);
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Redis {
    /// The process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The text of `INFO <section>`, read over a plain connection (no redis-cli needed).
    pub fn info(&self, section: &str) -> Result<String> {
        let addr = self.url.trim_start_matches("redis://");
        let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("INFO {section}\r\n").as_bytes())?;
        let mut reader = BufReader::new(s);
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let len: usize = header
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("INFO {section} answered {header:?}"))?;
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body)?;
        body.truncate(len);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_name_the_pieces_they_enable() {
        let plain = GatewayConfig::echo().toml();
        assert!(plain.contains("integration = \"echo\""));
        assert!(!plain.contains("$connect"));
        assert!(!plain.contains("[cluster]"));
        let full = GatewayConfig {
            default_route: DefaultRoute::HttpProxy("http://127.0.0.1:9/events".into()),
            mock_connect: true,
            redis: Some(("redis://127.0.0.1:7".into(), "lg".into())),
            read_buffer_bytes: Some(1024),
            lease_ttl_ms: Some(1000),
            resume_window_secs: Some(60),
        }
        .toml();
        assert!(full.contains("url = \"http://127.0.0.1:9/events\""));
        assert!(full.contains("[routes.\"$connect\"]"));
        assert!(full.contains("redis_url = \"redis://127.0.0.1:7\""));
        assert!(full.contains("read_buffer_bytes = 1024"));
        assert!(full.contains("lease_ttl_ms = 1000"));
        assert!(full.contains("[resume]\nenabled = true\nwindow_secs = 60"));
        assert!(!plain.contains("[resume]"));
    }
}
