//! The scenarios (one module each) and the measuring loops several of them share: request
//! loops over many connections (closed-loop or paced; [`drive`], with WebSocket round trips
//! as [`round_trips`]), and timed group broadcasts. Every loop is bounded
//! by a count and by `--max-secs`.

pub mod callback;
pub mod cluster;
pub mod connect;
pub mod echo;
pub mod fanout;
pub mod http_route;
pub mod idle;
pub mod resume;
pub mod resume_cluster;
pub mod scale;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, HttpConn, SourceAddrs};
use crate::procs;
use crate::stats::{self, Deliveries, Sample};

/// Options every scenario that starts a gateway takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// The switchboard binary (default: $SWITCHBOARD_BIN, else target/release/switchboard).
    #[arg(long)]
    pub gateway: Option<PathBuf>,
    /// Upper bound in seconds on each measuring phase (it stops early and says so).
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
}

impl Common {
    /// The phase time limit.
    pub fn limit(&self) -> Duration {
        Duration::from_secs(self.max_secs)
    }
}

/// What each round trip's reply must be.
#[derive(Clone, Copy)]
pub enum Expect {
    /// The message itself (echo).
    Same,
    /// This exact text.
    Text(&'static str),
}

/// The size of a run: closed-loop, or paced.
#[derive(Clone, Copy)]
pub struct Loop {
    /// Connections, one message in flight each.
    pub conns: usize,
    /// Timed messages per connection.
    pub msgs: usize,
    /// Untimed messages per connection first.
    pub warmup: usize,
    /// Padding bytes per message.
    pub pad: usize,
    /// `None`: closed loop (each connection sends its next message as soon as the reply
    /// came). `Some(every)`: each connection sends its timed messages on a schedule, one
    /// per `every` (connections staggered across it), or as soon as the previous reply came
    /// when it is behind.
    pub every: Option<Duration>,
}

impl Loop {
    /// Waits until timed message `n` of connection `c` is due (paced runs only).
    pub async fn pace(&self, start: Instant, c: usize, n: usize) {
        if let Some(every) = self.every {
            let offset = every.mul_f64(c as f64 / self.conns.max(1) as f64);
            tokio::time::sleep_until((start + offset + every * n as u32).into()).await;
        }
    }
}

/// A request that failed.
pub struct Failed {
    /// Why, for the report.
    pub why: String,
    /// The connection is unusable: it sends nothing more.
    pub fatal: bool,
}

/// One connection of a [`drive`]n loop: what it sends and how it checks the answer.
pub trait Exchange: Send + 'static {
    /// A request, built before its clock starts.
    type Request: Send;

    /// Request `i` of connection `c`.
    fn request(&self, c: usize, i: usize) -> Self::Request;

    /// Sends `request` and awaits a correct answer.
    fn exchange(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Failed>> + Send;

    /// After the last request.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs one task per connection: `warmup` untimed then `msgs` timed requests each, one at a
/// time (closed loop, or paced: see [`Loop::every`]), the timed ones starting together.
/// Latency is from each send to its answer.
pub async fn drive<E: Exchange>(conns: Vec<E>, size: Loop, limit: Duration) -> Result<Sample> {
    let Loop { msgs, warmup, .. } = size;
    let barrier = Arc::new(Barrier::new(conns.len() + 1));
    let deadline = Instant::now() + limit;
    let workers = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut sample = Sample::default();
                let mut failed = false;
                let mut timed_start = Instant::now();
                for i in 0..warmup + msgs {
                    if i == warmup {
                        barrier.wait().await;
                        timed_start = Instant::now();
                    }
                    if failed || Instant::now() > deadline {
                        if i < warmup {
                            continue; // still owes the barrier its wait
                        }
                        break;
                    }
                    if i >= warmup {
                        size.pace(timed_start, c, i - warmup).await;
                    }
                    let request = conn.request(c, i);
                    let sent = Instant::now();
                    match conn.exchange(request).await {
                        Ok(()) if i >= warmup => {
                            stats::record(&mut sample.hist, sent.elapsed().as_micros() as u64);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            failed = e.fatal;
                            sample.error(e.why);
                        }
                    }
                }
                if msgs == 0 {
                    barrier.wait().await;
                }
                conn.finish().await;
                sample
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut sample = Sample::gather(workers).await?;
    sample.elapsed = start.elapsed().as_secs_f64();
    sample.timed_out = Instant::now() > deadline;
    Ok(sample)
}

/// A WebSocket client sending `{"action":"echo",…}` messages and expecting `expect`.
struct EchoClient {
    ws: client::Ws,
    expect: Expect,
    padding: String,
}

impl Exchange for EchoClient {
    type Request = String;

    fn request(&self, c: usize, i: usize) -> String {
        let padding = &self.padding;
        format!(r#"{{"action":"echo","conn":{c},"seq":{i},"pad":"{padding}"}}"#)
    }

    async fn exchange(&mut self, text: String) -> Result<(), Failed> {
        let fatal = |e: anyhow::Error| Failed {
            why: e.to_string(),
            fatal: true,
        };
        self.ws
            .send(Message::text(text.clone()))
            .await
            .map_err(|e| fatal(e.into()))?;
        let reply = client::next_text(&mut self.ws).await.map_err(fatal)?;
        match self.expect {
            Expect::Same if reply == text => Ok(()),
            Expect::Text(t) if reply == t => Ok(()),
            _ => Err(Failed {
                why: format!("unexpected reply {reply}"),
                fatal: false,
            }),
        }
    }

    async fn finish(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Round trips over `size.conns` WebSocket connections to `path` (see [`drive`]): each
/// message is `{"action":"echo",…}` and the reply must be `expect`.
pub async fn round_trips(
    addr: SocketAddr,
    path: &str,
    size: Loop,
    expect: Expect,
    limit: Duration,
) -> Result<Sample> {
    let sources = SourceAddrs::fresh();
    let clients: Vec<Result<client::Ws>> = futures_util::stream::iter(0..size.conns)
        .map(|_| client::ws_connect(addr, path, sources.next()))
        .buffered(32)
        .collect()
        .await;
    let padding = "x".repeat(size.pad);
    let clients = clients
        .into_iter()
        .map(|ws| {
            Ok(EchoClient {
                ws: ws?,
                expect,
                padding: padding.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    drive(clients, size, limit).await
}

/// What [`broadcasts`] measured; rounds against the same server add up with
/// [`Broadcasts::absorb`].
pub struct Broadcasts {
    members: u64,
    count: usize,
    delivered: u64,
    /// Sum over broadcasts of the time from the send to the last copy (µs).
    busy_us: u64,
    latency: hdrhistogram::Histogram<u64>,
    per_broadcast: Vec<Value>,
    /// CPU time of the server processes and of this generator over the timed broadcasts.
    server_cpu_us: u64,
    generator_cpu_us: u64,
}

impl Broadcasts {
    /// Adds another round's broadcasts.
    pub fn absorb(&mut self, other: Broadcasts) {
        self.count += other.count;
        self.delivered += other.delivered;
        self.busy_us += other.busy_us;
        let _ = self.latency.add(&other.latency);
        self.per_broadcast.extend(other.per_broadcast);
        self.server_cpu_us += other.server_cpu_us;
        self.generator_cpu_us += other.generator_cpu_us;
    }

    /// The JSON report: deliveries/s (copies ÷ time from the send to the last copy, summed
    /// over broadcasts), delivery latency, CPU per delivery, one row per broadcast.
    pub fn json(&self) -> Value {
        let per_delivery = |us: u64| stats::round2(us as f64 / self.delivered.max(1) as f64);
        json!({
            "members": self.members,
            "broadcasts": self.count,
            "expected": self.members * self.count as u64,
            "delivered": self.delivered,
            "deliveries_per_s": stats::rate(self.delivered, self.busy_us as f64 / 1e6),
            "delivery_latency": stats::summary(&self.latency),
            "cpu_us_per_delivery": {
                "server": per_delivery(self.server_cpu_us),
                "generator": per_delivery(self.generator_cpu_us),
            },
            "per_broadcast": self.per_broadcast,
        })
    }
}

/// Sends `count` timed broadcasts (after one untimed warm-up) with `send`, which gets the
/// broadcast's payload (a [`stats::stamp`] of kind = its index) and returns once the
/// server accepted it; each waits until every one of `members` copies arrived (or
/// `per_broadcast` passed). Also reads the CPU time the `servers` processes and this
/// generator spent over the timed broadcasts. `deliveries` must have room for `count + 1`
/// kinds.
pub async fn broadcasts(
    mut send: impl AsyncFnMut(String) -> Result<()>,
    members: u64,
    count: usize,
    pad: usize,
    deliveries: &Deliveries,
    per_broadcast: Duration,
    servers: &[u32],
) -> Result<Broadcasts> {
    let cpu = || -> Result<(u64, u64)> {
        let mut server = 0;
        for pid in servers {
            server += procs::cpu_us(*pid)?;
        }
        Ok((server, procs::cpu_us(std::process::id())?))
    };
    let mut run = Broadcasts {
        members,
        count,
        delivered: 0,
        busy_us: 0,
        latency: stats::histogram(),
        per_broadcast: Vec::new(),
        server_cpu_us: 0,
        generator_cpu_us: 0,
    };
    let mut cpu_start = (0, 0);
    for b in 0..=count {
        if b == 1 {
            cpu_start = cpu()?;
        }
        let arrivals = &deliveries.broadcasts[b];
        let body = stats::stamp(b as u32, pad);
        let sent = Instant::now();
        send(body).await?;
        let post_us = sent.elapsed().as_micros() as u64;
        let deadline = sent + per_broadcast;
        while arrivals.count() < members && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Late copies are still counted below; give stragglers a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if b == 0 {
            continue; // warm-up
        }
        let hist = arrivals.latency.merged();
        let _ = run.latency.add(&hist);
        let got = arrivals.count();
        let last_us = arrivals.max_us.load(std::sync::atomic::Ordering::Relaxed);
        run.delivered += got;
        run.busy_us += last_us;
        let summary = stats::summary(&hist);
        run.per_broadcast.push(json!({
            "delivered": got,
            "post_ms": post_us as f64 / 1000.0,
            "last_delivery_ms": last_us as f64 / 1000.0,
            "deliveries_per_s": stats::rate(got, last_us as f64 / 1e6),
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
        }));
    }
    let cpu_end = cpu()?;
    run.server_cpu_us = cpu_end.0 - cpu_start.0;
    run.generator_cpu_us = cpu_end.1 - cpu_start.1;
    Ok(run)
}

/// A [`broadcasts`] sender that POSTs each payload to `/@groups/{group}` on `management`
/// and requires a 202.
pub fn post_to_group(management: SocketAddr, group: &str) -> impl AsyncFnMut(String) -> Result<()> {
    let mut http = HttpConn::new(management);
    let path = format!("/@groups/{group}");
    async move |body: String| {
        let (status, answer) = http
            .request(hyper::Method::POST, &path, Bytes::from(body))
            .await?;
        if status != 202 {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }
}
