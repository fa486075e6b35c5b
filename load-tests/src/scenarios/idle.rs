//! `idle`: open N connections in steps, hold them, and read the server process's RSS
//! (VmRSS in /proc/<pid>/status) before and after each step; report KiB per connection,
//! the least-squares slope and its R² (linearity), and the connect rate. The clients live
//! in `idle-worker` child processes (one process may hold only 20,000 descriptors), each
//! on its own block of 127.x.y.z source addresses. Baseline first, then the gateway.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::Common;
use crate::client::{self, SourceAddrs};
use crate::procs::{Gateway, GatewayConfig, Helper, gateway_binary, rss_kib};
use crate::report::{Table, num};
use crate::stats::{self, round2};

/// `loadgen idle` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections held at the end.
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    /// Client processes sharing them.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Steps to reach N (RSS is read after each: the points of the RSS chart).
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Handshakes in flight per worker. Keep workers x concurrency under the server's
    /// listen backlog (128 for tokio's bind): past it SYNs are dropped and retried a second
    /// later, which measures the backlog, not the server.
    #[arg(long, default_value_t = 24)]
    pub concurrency: usize,
    /// Milliseconds to wait after each step before reading RSS.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// The gateway's client.read_buffer_bytes (default: the gateway's own default).
    #[arg(long)]
    pub read_buffer_bytes: Option<usize>,
    /// The baseline server's read buffer.
    #[arg(long, default_value_t = 1024)]
    pub baseline_read_buffer: usize,
}

/// `loadgen idle-worker` options (started by `idle`, driven through stdin).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The server's WebSocket address.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Source block "A.B" (addresses 127.A.B.1-250).
    #[arg(long)]
    pub source: String,
    /// Handshakes in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// The worker: reads `open N` / `close` lines on stdin, answers one JSON line each, holds
/// its connections (never reading them: they are idle) until `close` or end of input.
pub async fn worker(args: &WorkerArgs) -> Result<()> {
    let sources = SourceAddrs::from_prefix(&args.source)?;
    let mut held = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let answer = if let Some(n) = line.strip_prefix("open ") {
            let n: usize = n.trim().parse().context("open N")?;
            let start = Instant::now();
            let results: Vec<Result<client::Ws>> = futures_util::stream::iter(0..n)
                .map(|_| client::ws_connect(args.addr, &args.path, sources.next()))
                .buffer_unordered(args.concurrency.max(1))
                .collect()
                .await;
            let (mut failed, mut first_error) = (0usize, None::<String>);
            for r in results {
                match r {
                    Ok(ws) => held.push(ws),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            json!({"opened": n - failed, "failed": failed, "error": first_error,
                   "elapsed_ms": start.elapsed().as_millis() as u64, "held": held.len()})
        } else if line.trim() == "close" {
            held.clear();
            json!({"closed": true})
        } else {
            json!({"error": format!("unknown command {line:?}")})
        };
        out.write_all(format!("{answer}\n").as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// A running worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn start(
        addr: SocketAddr,
        path: &str,
        source: &SourceAddrs,
        concurrency: usize,
    ) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@""#)
            .arg("sh")
            .arg(exe)
            .args(["idle-worker", "--addr", &addr.to_string(), "--path", path])
            .args([
                "--source",
                &source.prefix(),
                "--concurrency",
                &concurrency.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting idle-worker")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn command(&mut self, command: String, limit: Duration) -> Result<Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("idle-worker did not answer {command:?} within {limit:?}"))??
            .ok_or_else(|| anyhow!("idle-worker exited"))?;
        Ok(serde_json::from_str(&line)?)
    }

    async fn stop(mut self) {
        let _ = self.command("close".into(), Duration::from_secs(30)).await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Opens the connections step by step against the server at `addr` (process `pid`).
async fn measure(addr: SocketAddr, path: &str, pid: u32, args: &Args) -> Result<Value> {
    let limit = args.common.limit();
    tokio::time::sleep(Duration::from_millis(args.settle_ms.min(500))).await;
    let before = rss_kib(pid)?;
    let workers_n = args.workers.max(1);
    let mut workers = Vec::new();
    for _ in 0..workers_n {
        // Each worker (and each server measured) gets its own source block.
        workers.push(Worker::start(
            addr,
            path,
            &SourceAddrs::fresh(),
            args.concurrency,
        )?);
    }
    let mut steps = vec![json!({"connections": 0, "rss_kib": before})];
    let mut points = vec![(0.0, before as f64)];
    let (mut held, mut failed, mut connect_secs) = (0usize, 0usize, 0.0f64);
    let mut first_error = None;
    let steps_n = args.steps.max(1);
    for step in 1..=steps_n {
        let goal = args.connections * step / steps_n;
        let need = goal.saturating_sub(held);
        let start = Instant::now();
        let answers =
            futures_util::future::join_all(workers.iter_mut().enumerate().map(|(i, w)| {
                let share = need / workers_n + usize::from(i < need % workers_n);
                w.command(format!("open {share}"), limit)
            }))
            .await;
        connect_secs += start.elapsed().as_secs_f64();
        for answer in answers {
            let answer = answer?;
            held += answer["opened"].as_u64().unwrap_or(0) as usize;
            failed += answer["failed"].as_u64().unwrap_or(0) as usize;
            if first_error.is_none() && !answer["error"].is_null() {
                first_error = Some(answer["error"].clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        let rss = rss_kib(pid).context("the server process is gone")?;
        steps.push(json!({"connections": held, "rss_kib": rss}));
        points.push((held as f64, rss as f64));
        if failed > 0 && held == 0 {
            break;
        }
    }
    let after = points.last().map(|p| p.1 as u64).unwrap_or(before);
    for w in workers {
        w.stop().await;
    }
    let (slope, r2) = stats::fit(&points);
    let per_conn = if held > 0 {
        (after as f64 - before as f64) / held as f64
    } else {
        0.0
    };
    Ok(json!({
        "connections": held,
        "failed": failed,
        "first_error": first_error,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round2(per_conn),
        "slope_kib_per_connection": round2(slope),
        "r2": (r2 * 10000.0).round() / 10000.0,
        "connect_rate_per_s": stats::rate(held as u64, connect_secs),
        "steps": steps,
    }))
}

/// Baseline, then the gateway.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    if args.connections == 0 {
        bail!("--connections must be positive");
    }
    let baseline = {
        let buffer = args.baseline_read_buffer.to_string();
        let server = Helper::start(&[
            "baseline-server",
            "--listen",
            "127.0.0.1:0",
            "--read-buffer",
            &buffer,
        ])?;
        measure(server.addr, "/", server.pid(), args).await?
    };
    let gateway = {
        let config = GatewayConfig {
            read_buffer_bytes: args.read_buffer_bytes,
            ..GatewayConfig::echo()
        };
        let mut gw = Gateway::start(&binary, &config)?;
        let r = measure(gw.client_addr, "/prod", gw.pid(), args).await?;
        gw.check_alive()?;
        r
    };
    let ratio = match (
        gateway["kib_per_connection"].as_f64(),
        baseline["kib_per_connection"].as_f64(),
    ) {
        (Some(g), Some(b)) if b > 0.0 => json!(round2(g / b)),
        _ => Value::Null,
    };
    let n = args.connections as u64;
    Ok(json!({
        "scenario": "idle",
        "ok": gateway["failed"] == 0 && baseline["failed"] == 0
            && gateway["connections"] == n && baseline["connections"] == n,
        "throughput_per_s": gateway["connect_rate_per_s"],
        "params": {
            "connections": n, "workers": args.workers, "steps": args.steps,
            "concurrency_per_worker": args.concurrency, "settle_ms": args.settle_ms,
            "gateway_read_buffer_bytes": args.read_buffer_bytes,
            "baseline_read_buffer_bytes": args.baseline_read_buffer,
        },
        "ratio_kib_per_connection": ratio,
        "baseline": baseline,
        "gateway": gateway,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let mut t = Table::new(
        format!(
            "idle: {} connections held (gateway/baseline memory per connection: {})",
            num(&v["params"]["connections"]),
            num(&v["ratio_kib_per_connection"]),
        ),
        &[
            "server",
            "held",
            "failed",
            "RSS before KiB",
            "RSS after KiB",
            "KiB/conn",
            "slope KiB/conn",
            "R²",
            "connects/s",
        ],
    );
    for side in ["baseline", "gateway"] {
        let r = &v[side];
        t.row(
            side,
            [
                "connections",
                "failed",
                "rss_before_kib",
                "rss_after_kib",
                "kib_per_connection",
                "slope_kib_per_connection",
                "r2",
                "connect_rate_per_s",
            ]
            .iter()
            .map(|k| num(&r[k]))
            .collect(),
        );
    }
    t
}
