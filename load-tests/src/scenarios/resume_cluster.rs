//! `resume-cluster`: the herd after a node dies (issue 15). A throwaway redis-server and
//! `--nodes` gateway nodes sharing it, with `[resume]` on and a short
//! `cluster.lease_ttl_ms`, so a dead node is found within a couple of seconds.
//!
//! `--sessions` resumable sessions are opened on node 0, and each is sent `--messages`
//! numbered POSTs through node 1, round after round (a POST to a resumable session answers
//! 200 only once its frame is in Redis, so these survive the node). Each client reads the
//! first `--read` of them live; the rest wait unread. Then node 0 is killed with SIGKILL,
//! and every client resumes at once — starts spread over `--spread-ms` from the kill — on
//! the survivors (client i on survivor i mod (nodes − 1)) with its token and the offset it
//! read up to. A 409 means the dead node is not yet known dead: the client tries again
//! after a jittered `--retry-ms` (0.5–1.5×), and so after any other failed attempt. A
//! resume must say `resumed: true` and bring every message after the client's offset
//! exactly once, in order: a fresh welcome, or a message missing, repeated or out of order,
//! counts as lost. After the herd one `@broadcast` must arrive on every resumed session as
//! the next offset (nothing repeated after the replay, and live traffic reaches the
//! taken-over sessions).
//!
//! Meanwhile `--survivors` plain connections on the survivors echo at a fixed rate; each
//! latency is filed under the phase its message was sent in: before the kill, while the
//! death is not yet known (kill → the first answer other than 409), and while the herd
//! resumes (→ the last session resumed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use super::cluster::start_nodes;
use super::resume::{self, Session};
use super::scale;
use crate::client::{self, HttpConn, SourceAddrs, Ws};
use crate::procs::{GatewayConfig, Redis, cpu_us, gateway_binary, nofile_limits};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Sample, round2};

/// `loadgen resume-cluster` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Gateway nodes: node 0 holds the sessions and is killed; the others survive.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Resumable sessions opened on node 0 (one open file each in this process).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Handshakes in flight while opening the sessions.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Numbered messages POSTed to every session (through node 1) before the kill.
    #[arg(long, default_value_t = 4)]
    pub messages: u64,
    /// Of those, how many each client reads live: its offset when it resumes (the rest
    /// must be replayed).
    #[arg(long, default_value_t = 2)]
    pub read: u64,
    /// Padding bytes of each message.
    #[arg(long, default_value_t = 100)]
    pub pad: usize,
    /// Concurrent callers POSTing the messages (each one keep-alive connection).
    #[arg(long, default_value_t = 32)]
    pub callers: usize,
    /// The resumes start spread evenly over this many milliseconds from the kill.
    #[arg(long, default_value_t = 1000)]
    pub spread_ms: u64,
    /// A client tries again this many milliseconds (jittered 0.5-1.5x) after a 409 or a
    /// failed attempt.
    #[arg(long, default_value_t = 500)]
    pub retry_ms: u64,
    /// Plain connections on the survivors echoing throughout.
    #[arg(long, default_value_t = 50)]
    pub survivors: usize,
    /// Each survivor sends one message every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub survivor_every_ms: u64,
    /// Milliseconds the survivors are measured before the kill.
    #[arg(long, default_value_t = 2000)]
    pub before_ms: u64,
    /// `cluster.lease_ttl_ms` of every node: a node silent this long loses its lease (the
    /// gateway's default is 5000).
    #[arg(long, default_value_t = 1000)]
    pub lease_ttl_ms: u64,
    /// `resume.window_secs` of every node (longer than the herd takes).
    #[arg(long, default_value_t = 120)]
    pub window_secs: u64,
}

/// The phases the survivors' latencies are filed under (by when each message was sent).
mod phase {
    /// Connected, not measured yet.
    pub const WARMUP: u8 = 0;
    /// Before the kill.
    pub const BEFORE: u8 = 1;
    /// Killed; no answer but 409 yet.
    pub const DETECTION: u8 = 2;
    /// The first answer other than 409 came; until the last session resumed.
    pub const TAKEOVER: u8 = 3;
    /// Done: the survivors stop.
    pub const STOP: u8 = 4;
}

/// Attempts one client makes at most (the deadline usually ends them first).
const MAX_ATTEMPTS: u32 = 1000;

/// The survivors: `n` plain connections spread over `nodes`, each sending an echo message
/// every `every` (staggered over it; at once when behind schedule) until the phase is
/// [`phase::STOP`] or `limit` passed; each latency is filed under the phase its message
/// was sent in (BEFORE, DETECTION, TAKEOVER).
///
/// They run on a thread of their own with a runtime of their own, and this returns once
/// they are connected. They stand for other clients (on other machines): their latency
/// must be the gateway's, not the time their wake-ups spend queued behind the herd's ten
/// thousand tasks in this process's runtime (which, on a saturated machine, reached
/// seconds). They still share the machine's cores with everything else.
async fn start_survivors(
    nodes: Vec<SocketAddr>,
    n: usize,
    every: Duration,
    now: Arc<AtomicU8>,
    limit: Duration,
) -> Result<std::thread::JoinHandle<[Sample; 3]>> {
    let (connected_tx, connected) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("survivors".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = connected_tx.send(Err(format!("survivors' runtime: {e}")));
                    return Default::default();
                }
            };
            runtime.block_on(async move {
                let sources = SourceAddrs::fresh();
                let mut clients = Vec::new();
                for i in 0..n {
                    match client::ws_connect(nodes[i % nodes.len()], "/prod", sources.next()).await
                    {
                        Ok(ws) => clients.push(ws),
                        Err(e) => {
                            let _ = connected_tx.send(Err(format!("survivor: {e:#}")));
                            return Default::default();
                        }
                    }
                }
                let _ = connected_tx.send(Ok(()));
                let start = Instant::now();
                let deadline = start + limit;
                let tasks: Vec<_> = clients
                    .into_iter()
                    .enumerate()
                    .map(|(c, ws)| {
                        let offset = every.mul_f64(c as f64 / n.max(1) as f64);
                        let now = now.clone();
                        tokio::spawn(survive(c, ws, start + offset, every, now, deadline))
                    })
                    .collect();
                let mut phases: [Sample; 3] = Default::default();
                for task in tasks {
                    let Ok(samples) = task.await else { continue };
                    for (all, one) in phases.iter_mut().zip(samples) {
                        all.absorb(one);
                    }
                }
                phases
            })
        })?;
    match connected.await {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(why)) => bail!("{why}"),
        Err(_) => bail!("the survivors' thread ended before connecting"),
    }
}

/// One survivor's echo loop (see [`start_survivors`]): message k is due at `first + k ×
/// every`.
async fn survive(
    c: usize,
    mut ws: Ws,
    first: Instant,
    every: Duration,
    now: Arc<AtomicU8>,
    deadline: Instant,
) -> [Sample; 3] {
    let mut samples: [Sample; 3] = Default::default();
    for k in 0u32.. {
        tokio::time::sleep_until((first + every * k).into()).await;
        let p = now.load(Ordering::Relaxed);
        if p == phase::STOP || Instant::now() > deadline {
            break;
        }
        let text = format!(r#"{{"action":"echo","conn":{c},"seq":{k}}}"#);
        let sent = Instant::now();
        let answer = async {
            ws.send(Message::text(text.clone())).await?;
            let reply = client::next_text(&mut ws).await?;
            if reply != text {
                bail!("unexpected reply {reply}");
            }
            Ok(())
        }
        .await;
        let Some(sample) = (p as usize).checked_sub(1).and_then(|i| samples.get_mut(i)) else {
            if answer.is_err() {
                break;
            }
            continue; // warm-up
        };
        match answer {
            Ok(()) => stats::record(&mut sample.hist, sent.elapsed().as_micros() as u64),
            Err(e) => {
                sample.error(format!("{e:#}"));
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    samples
}

/// Why reading a session's frames stopped.
enum Replay {
    /// A frame that is not the next message: missing, repeated or out of order.
    Lost(String),
    /// The connection failed (resume again from the last frame read).
    Broken(String),
}

/// Reads frames `session.offset + 1 ..= upto` and checks each is the message of that
/// number; advances `session.offset` with every one.
async fn read_messages(ws: &mut Ws, session: &mut Session, upto: u64) -> Result<(), Replay> {
    while session.offset < upto {
        let expected = session.offset + 1;
        let frame = resume::next_json(ws)
            .await
            .map_err(|e| Replay::Broken(format!("{e:#}")))?;
        let number = frame["d"]
            .as_str()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|d| d["k"].as_u64());
        if frame["$sb"] != "m" || frame["o"] != expected || number != Some(expected) {
            return Err(Replay::Lost(format!(
                "expected message {expected}, got {frame}"
            )));
        }
        session.offset = expected;
    }
    Ok(())
}

/// What every herd client shares.
struct Herd {
    /// The surviving nodes' client listeners.
    survivors: Vec<SocketAddr>,
    /// Messages each session was sent (the last offset a resume must bring).
    messages: u64,
    /// The mean delay before another attempt.
    retry: Duration,
    /// No attempt starts after this.
    deadline: Instant,
    /// Source addresses of the resumes' connections.
    sources: SourceAddrs,
    /// The survivors' phase: DETECTION until the first answer other than 409.
    phase: Arc<AtomicU8>,
    /// Clients not finished yet; the last one sets the phase to STOP.
    remaining: AtomicUsize,
}

/// How one client's resume went.
struct Resumed {
    /// 409 answers, each followed by another attempt.
    busy: u32,
    /// Other failed attempts, each followed by another attempt.
    failed: u32,
    /// Why the first of them failed.
    first_failure: Option<String>,
    /// When the first answer other than 409 (a 101 or another status) came.
    first_answer: Option<Instant>,
    /// The survivor it resumed on (an index into `Herd::survivors`).
    node: usize,
    /// How it ended.
    outcome: Outcome,
}

/// The end of one client's resume.
enum Outcome {
    /// Resumed with every kept message: from the last attempt's TCP connect to the last
    /// kept frame, when that came, and the connection.
    Done(Duration, Instant, Box<Ws>, Session),
    /// A fresh welcome, or a kept message missing, repeated or out of order.
    Lost(String),
    /// Not resumed by the deadline or within [`MAX_ATTEMPTS`].
    GaveUp(String),
}

/// A delay of 0.5–1.5 × `mean`, different for every (client, attempt) (splitmix64).
fn jittered(mean: Duration, client: usize, attempt: u32) -> Duration {
    let mut z = (client as u64) << 20 ^ u64::from(attempt);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    mean.mul_f64(0.5 + (z >> 11) as f64 / (1u64 << 53) as f64)
}

/// What the herd's clients did, added up.
struct HerdOutcome {
    /// Resume latency of every resumed session (µs).
    latency: hdrhistogram::Histogram<u64>,
    /// 409 answers, in all.
    busy: u64,
    /// The most 409 answers one client got.
    max_busy: u32,
    /// Other failed attempts.
    failed: u64,
    /// Why the first of them failed.
    first_failure: Option<String>,
    /// Sessions lost (a fresh welcome, a message missing, repeated or out of order).
    lost: Sample,
    /// Sessions not resumed by the deadline.
    gave_up: Sample,
    /// When the first answer other than 409 came (the death was known).
    first_answer: Instant,
    /// When the last session had all its messages.
    last_done: Instant,
    /// Sessions resumed on each survivor.
    by_node: Vec<u64>,
    /// The resumed connections, with their sessions.
    resumed: Vec<(Box<Ws>, Session)>,
}

impl Herd {
    /// Every client drops its connection to the dead node and resumes (see
    /// [`Herd::resume`]), client i starting at `killed + i/n × spread`.
    async fn run(
        self: &Arc<Self>,
        clients: Vec<(Ws, Session)>,
        killed: Instant,
        spread: Duration,
    ) -> Result<HerdOutcome> {
        let n = clients.len().max(1);
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, (old, session))| {
                let herd = self.clone();
                let at = killed + spread.mul_f64(i as f64 / n as f64);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    drop(old); // the client noticed its node is gone
                    herd.resume(i, session).await
                })
            })
            .collect();
        let mut all = HerdOutcome {
            latency: stats::histogram(),
            busy: 0,
            max_busy: 0,
            failed: 0,
            first_failure: None,
            lost: Sample::default(),
            gave_up: Sample::default(),
            first_answer: Instant::now() + Duration::from_secs(3600),
            last_done: killed,
            by_node: vec![0; self.survivors.len()],
            resumed: Vec::new(),
        };
        for task in tasks {
            let r = task.await?;
            all.busy += u64::from(r.busy);
            all.max_busy = all.max_busy.max(r.busy);
            all.failed += u64::from(r.failed);
            all.first_failure = all.first_failure.take().or(r.first_failure);
            if let Some(t) = r.first_answer {
                all.first_answer = all.first_answer.min(t);
            }
            match r.outcome {
                Outcome::Done(took, done, ws, session) => {
                    stats::record(&mut all.latency, took.as_micros() as u64);
                    all.last_done = all.last_done.max(done);
                    all.by_node[r.node] += 1;
                    all.resumed.push((ws, session));
                }
                Outcome::Lost(why) => all.lost.error(why),
                Outcome::GaveUp(why) => all.gave_up.error(why),
            }
        }
        // Nobody answered other than 409: the first answer is the end.
        all.first_answer = all.first_answer.min(all.last_done);
        Ok(all)
    }

    /// Client `i` resumes `session` (on survivor i mod their count) until it has every
    /// kept message, is told it lost something, or gives up.
    async fn resume(&self, i: usize, mut session: Session) -> Resumed {
        let node = i % self.survivors.len();
        let addr = self.survivors[node];
        let mut r = Resumed {
            busy: 0,
            failed: 0,
            first_failure: None,
            first_answer: None,
            node,
            outcome: Outcome::GaveUp(format!("{MAX_ATTEMPTS} attempts")),
        };
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(jittered(self.retry, i, attempt)).await;
            }
            if Instant::now() > self.deadline {
                r.outcome = Outcome::GaveUp(format!("not resumed after {attempt} attempts"));
                break;
            }
            let connect = Instant::now();
            let mut ws = match resume::open(addr, self.sources.next(), Some(&session)).await {
                Ok(ws) => ws,
                Err(e) => {
                    match resume::refused_with(&e) {
                        Some(409) => {
                            r.busy += 1;
                            continue;
                        }
                        Some(_) => self.answered(&mut r),
                        None => {}
                    }
                    r.failed += 1;
                    r.first_failure.get_or_insert(format!("{e:#}"));
                    continue;
                }
            };
            self.answered(&mut r);
            let welcome = match resume::next_json(&mut ws).await {
                Ok(w) => w,
                Err(e) => {
                    r.failed += 1;
                    r.first_failure.get_or_insert(format!("welcome: {e:#}"));
                    continue;
                }
            };
            if welcome["resumed"] != true {
                r.outcome = Outcome::Lost(format!("not resumed: {welcome}"));
                break;
            }
            match read_messages(&mut ws, &mut session, self.messages).await {
                Ok(()) => {
                    let done = Instant::now();
                    let took = done.duration_since(connect);
                    r.outcome = Outcome::Done(took, done, Box::new(ws), session);
                    break;
                }
                Err(Replay::Lost(why)) => {
                    r.outcome = Outcome::Lost(why);
                    break;
                }
                Err(Replay::Broken(why)) => {
                    r.failed += 1;
                    r.first_failure.get_or_insert(format!("replay: {why}"));
                }
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.phase.store(phase::STOP, Ordering::Relaxed);
        }
        r
    }

    /// Notes an answer other than 409: the first one ends the survivors' DETECTION phase.
    fn answered(&self, r: &mut Resumed) {
        r.first_answer.get_or_insert_with(Instant::now);
        let _ = self.phase.compare_exchange(
            phase::DETECTION,
            phase::TAKEOVER,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The samples of `metric` in a Prometheus text page, summed by the value of `label`
/// ("" for samples without it).
fn by_label(page: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue, // another metric with this prefix
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let key = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(label)?.strip_prefix("=\""))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned();
        *out.entry(key).or_default() += value;
    }
    out
}

/// [`by_label`] over several nodes' pages, added up.
async fn scrape_by_label(
    managements: &[SocketAddr],
    metric: &str,
    label: &str,
) -> Result<BTreeMap<String, f64>> {
    let mut all = BTreeMap::new();
    for m in managements {
        let (status, body) = HttpConn::new(*m)
            .request(hyper::Method::GET, "/metrics", Bytes::new())
            .await?;
        if status != 200 {
            bail!("GET /metrics on {m} answered {status}");
        }
        for (k, v) in by_label(&String::from_utf8_lossy(&body), metric, label) {
            *all.entry(k).or_default() += v;
        }
    }
    Ok(all)
}

/// Redis's commands between two `INFO commandstats` readings: calls, calls per resume
/// and µs, for each command called at least once per 100 resumes.
fn herd_commands(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    resumes: u64,
) -> Value {
    let resumes = resumes.max(1) as f64;
    let mut out = serde_json::Map::new();
    for (name, (calls, usec)) in after {
        let (calls0, usec0) = before.get(name).copied().unwrap_or_default();
        let calls = calls - calls0;
        if calls >= resumes / 100.0 {
            out.insert(
                name.clone(),
                json!({"calls": calls, "per_resume": round2(calls / resumes),
                       "usec": usec - usec0}),
            );
        }
    }
    Value::Object(out)
}

/// Round k POSTs message k (`{"k":k,"pad":…}`) to every session in `ids` through
/// `poster`, with `--callers` closed-loop callers, after round k − 1 ended: so the
/// messages of one session are numbered 1..=K in order. Every POST must answer 200.
async fn post_messages(poster: SocketAddr, ids: Vec<String>, args: &Args) -> Result<Value> {
    let ids = Arc::new(ids);
    let callers = args.callers.max(1);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = stats::histogram();
    let mut first_error = None;
    let start = Instant::now();
    for k in 1..=args.messages {
        let body = Bytes::from(format!(r#"{{"k":{k},"pad":"{}"}}"#, "m".repeat(args.pad)));
        let ids = ids.clone();
        let posted = client::post_closed_loop(poster, callers, 200, move |c, i| {
            let id = ids.get(i * callers + c)?;
            Some((format!("/@connections/{id}"), body.clone()))
        })
        .await?;
        let _ = latency.add(&posted.accepted);
        for (status, count) in posted.statuses {
            *statuses.entry(status).or_default() += count;
        }
        first_error = first_error.or(posted.first_error);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "expected": ids.len() as u64 * args.messages,
        "statuses": statuses,
        "first_error": first_error,
        "elapsed_s": round2(elapsed),
        "posts_per_s": stats::rate(latency.len(), elapsed),
        "latency": stats::summary(&latency),
    }))
}

/// Every client reads messages 1..=`read` live (their offset when they resume).
async fn read_live(clients: Vec<(Ws, Session)>, read: u64) -> (Vec<(Ws, Session)>, Sample) {
    let live: Vec<(Ws, Session, Result<(), Replay>)> = futures_util::stream::iter(clients)
        .map(|(mut ws, mut session)| async move {
            let result = read_messages(&mut ws, &mut session, read).await;
            (ws, session, result)
        })
        .buffer_unordered(512)
        .collect()
        .await;
    let mut errors = Sample::default();
    let mut clients = Vec::new();
    for (ws, session, result) in live {
        if let Err(Replay::Lost(why) | Replay::Broken(why)) = result {
            errors.error(why);
        }
        clients.push((ws, session));
    }
    (clients, errors)
}

/// Broadcasts one last message through `poster`; every resumed session must receive it as
/// its next offset. Returns the connections (still open) and the ones that did not.
async fn broadcast_after(
    poster: SocketAddr,
    resumed: Vec<(Box<Ws>, Session)>,
) -> Result<(Vec<Box<Ws>>, Sample)> {
    const LAST: &str = r#"{"k":"after"}"#;
    let (status, _) = HttpConn::new(poster)
        .request(hyper::Method::POST, "/@broadcast", LAST)
        .await?;
    if status != 202 && status != 200 {
        bail!("the broadcast after the herd answered {status}");
    }
    let checked: Vec<(Box<Ws>, Result<(), String>)> = futures_util::stream::iter(resumed)
        .map(|(mut ws, session)| async move {
            let expected = session.offset + 1;
            let result = match resume::next_json(&mut ws).await {
                Ok(frame) if frame["o"] == expected && frame["d"] == LAST => Ok(()),
                Ok(frame) => Err(format!("expected the broadcast at {expected}, got {frame}")),
                Err(e) => Err(format!("{e:#}")),
            };
            (ws, result)
        })
        .buffer_unordered(1024)
        .collect()
        .await;
    let mut wrong = Sample::default();
    let mut held = Vec::new();
    for (ws, result) in checked {
        if let Err(why) = result {
            wrong.error(why);
        }
        held.push(ws);
    }
    Ok((held, wrong))
}

/// What the surviving nodes counted: resumes by result, handshakes by status, dropped
/// messages by reason, and the sessions still suspended.
async fn survivor_gauges(managements: &[SocketAddr]) -> Result<Value> {
    let suspended: f64 = scrape_by_label(managements, "switchboard_sessions_suspended", "")
        .await?
        .values()
        .sum();
    Ok(json!({
        "resumes_total": scrape_by_label(managements, "switchboard_resumes_total", "result").await?,
        "handshakes_total": scrape_by_label(managements, "switchboard_handshakes_total", "status").await?,
        "messages_dropped_total":
            scrape_by_label(managements, "switchboard_messages_dropped_total", "reason").await?,
        "suspended_left": suspended,
    }))
}

/// Seconds from `a` to `b`, rounded (0 when `b` is earlier).
fn secs(a: Instant, b: Instant) -> f64 {
    round2(b.saturating_duration_since(a).as_secs_f64())
}

/// Starts Redis and the nodes, opens and feeds the sessions, kills node 0 and measures the
/// herd.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    if args.nodes < 2 {
        bail!("--nodes must be at least 2 (node 0 dies, the others take its sessions)");
    }
    let read = args.read.min(args.messages);
    // Every session is one open file here, and so is every survivor; the resumes replace
    // the sessions' sockets one for one.
    let (soft, _) = nofile_limits()?;
    let need = (args.sessions + args.survivors + 1024) as u64;
    if soft < need {
        bail!(
            "{} sessions need about {need} open files; this process may open {soft} \
             (raise the hard limit, or pass fewer --sessions)",
            args.sessions
        );
    }
    let limit = args.common.limit();
    let redis = Redis::start()?;
    let config = GatewayConfig {
        redis: Some((redis.url.clone(), format!("lg{}", std::process::id()))),
        lease_ttl_ms: Some(args.lease_ttl_ms),
        resume_window_secs: Some(args.window_secs),
        ..GatewayConfig::echo()
    };
    let mut nodes = start_nodes(&binary, &config.toml(), args.nodes).await?;
    let survivor_nodes: Vec<SocketAddr> = nodes[1..].iter().map(|n| n.client_addr).collect();
    let survivor_managements: Vec<SocketAddr> =
        nodes[1..].iter().map(|n| n.management_addr).collect();
    let poster = nodes[1].management_addr;

    // The sessions, on node 0.
    let sources = SourceAddrs::fresh();
    let opened: Vec<Result<(Ws, Session)>> = futures_util::stream::iter(0..args.sessions)
        .map(|_| resume::open_session(nodes[0].client_addr, sources.next()))
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let mut open_errors = Sample::default();
    let mut clients = Vec::new();
    for r in opened {
        match r {
            Ok(pair) => clients.push(pair),
            Err(e) => open_errors.error(format!("{e:#}")),
        }
    }
    if clients.is_empty() {
        bail!("no session opened: {:?}", open_errors.first_error);
    }
    let n = clients.len();

    // The numbered messages, then each client reads the first `read` of them live.
    let ids: Vec<String> = clients.iter().map(|(_, s)| s.id.clone()).collect();
    let posts = post_messages(poster, ids, args).await?;
    let (clients, live_errors) = read_live(clients, read).await;
    // What node 0 could not confirm in Redis (a POST's frame is answered 200 anyway).
    let dropped_before_kill = scrape_by_label(
        &[nodes[0].management_addr],
        "switchboard_messages_dropped_total",
        "reason",
    )
    .await?;

    // The survivors: measured before the kill, then through it.
    let now = Arc::new(AtomicU8::new(phase::WARMUP));
    let every = Duration::from_millis(args.survivor_every_ms.max(1));
    let survivors = start_survivors(
        survivor_nodes.clone(),
        args.survivors,
        every,
        now.clone(),
        limit * 2,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    now.store(phase::BEFORE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(args.before_ms)).await;

    // What Redis does for the herd: its commands and CPU time from the kill to the end.
    let redis_before = (
        scale::commandstats(&redis.info("commandstats")?),
        cpu_us(redis.pid())?,
    );

    // The kill, and the herd.
    let killed = Instant::now();
    nodes[0].kill()?;
    now.store(phase::DETECTION, Ordering::Relaxed);
    let herd = Arc::new(Herd {
        survivors: survivor_nodes.clone(),
        messages: args.messages,
        retry: Duration::from_millis(args.retry_ms.max(1)),
        deadline: killed + limit,
        sources: SourceAddrs::fresh(),
        phase: now.clone(),
        remaining: AtomicUsize::new(n),
    });
    let outcome = herd
        .run(clients, killed, Duration::from_millis(args.spread_ms))
        .await?;
    now.store(phase::STOP, Ordering::Relaxed);
    let redis_cpu_ms = cpu_us(redis.pid())?.saturating_sub(redis_before.1) / 1000;
    let redis_commands = herd_commands(
        &redis_before.0,
        &scale::commandstats(&redis.info("commandstats")?),
        outcome.latency.len(),
    );
    let phases = tokio::task::spawn_blocking(move || survivors.join())
        .await?
        .map_err(|_| anyhow!("the survivors' thread panicked"))?;
    let (first_answer, last_done) = (outcome.first_answer, outcome.last_done);
    let [mut before, mut detection, mut takeover] = phases;
    before.elapsed = args.before_ms as f64 / 1000.0;
    detection.elapsed = first_answer.saturating_duration_since(killed).as_secs_f64();
    takeover.elapsed = last_done
        .saturating_duration_since(first_answer)
        .as_secs_f64();
    let mut during = Sample::default();
    for part in [&detection, &takeover] {
        let _ = during.hist.add(&part.hist);
        during.errors += part.errors;
        during.first_error = during.first_error.take().or(part.first_error.clone());
        during.elapsed += part.elapsed;
    }

    // One broadcast after the herd: the next offset on every resumed session. The
    // connections stay open until the gauges are read (a dropped one is suspended).
    let (held, after) = broadcast_after(poster, outcome.resumed).await?;
    let after_received = held.len() as u64 - after.errors;

    let gauges = survivor_gauges(&survivor_managements).await?;
    let suspended_left = gauges["suspended_left"].as_f64().unwrap_or(f64::NAN);
    for node in &mut nodes[1..] {
        node.check_alive()?;
    }
    // A clean close ends the sessions (the nodes then stop without suspended ones).
    futures_util::stream::iter(held)
        .for_each_concurrent(1024, |mut ws| async move {
            let _ = tokio::time::timeout(client::IO_LIMIT, (*ws).close(None)).await;
        })
        .await;
    drop(nodes);
    drop(redis);

    let resumed_n = outcome.latency.len();
    let all_resumed_s = secs(killed, last_done);
    let ok = open_errors.errors == 0
        && posts["statuses"]["200"] == n as u64 * args.messages
        && live_errors.errors == 0
        && resumed_n == n as u64
        && outcome.lost.errors == 0
        && outcome.gave_up.errors == 0
        && outcome.failed == 0
        && after.errors == 0
        && before.errors + during.errors == 0
        && suspended_left == 0.0;
    Ok(json!({
        "scenario": "resume-cluster",
        "ok": ok,
        // Resumes per second, from the kill to the last one.
        "throughput_per_s": stats::rate(resumed_n, all_resumed_s),
        "params": {"nodes": args.nodes, "sessions": args.sessions, "messages": args.messages,
                   "read_live": read, "pad_bytes": args.pad, "callers": args.callers,
                   "spread_ms": args.spread_ms, "retry_ms": args.retry_ms,
                   "survivors": args.survivors, "survivor_every_ms": args.survivor_every_ms,
                   "before_ms": args.before_ms, "lease_ttl_ms": args.lease_ttl_ms,
                   "window_secs": args.window_secs},
        "setup": {
            "sessions": n,
            "open_errors": open_errors.errors,
            "open_first_error": open_errors.first_error,
            "posts": posts,
            "live_read_errors": live_errors.errors,
            "live_read_first_error": live_errors.first_error,
            "node0_dropped_before_kill": dropped_before_kill,
        },
        "herd": {
            "sessions": n,
            "resumed": resumed_n,
            "lost": outcome.lost.errors,
            "first_lost": outcome.lost.first_error,
            "unresumed": outcome.gave_up.errors,
            "first_unresumed": outcome.gave_up.first_error,
            "retries_409": outcome.busy,
            "max_409_per_session": outcome.max_busy,
            "failed_attempts": outcome.failed,
            "first_failed_attempt": outcome.first_failure,
            "kill_to_first_answer_s": secs(killed, first_answer),
            "time_to_all_resumed_s": all_resumed_s,
            "first_answer_to_all_resumed_s": secs(first_answer, last_done),
            "by_node": outcome.by_node,
            "resume_latency": stats::summary(&outcome.latency),
            "broadcast_after": {"expected": resumed_n, "received": after_received,
                                "wrong": after.errors, "first_wrong": after.first_error},
        },
        "redis_during_herd": {"cpu_ms": redis_cpu_ms, "commands": redis_commands},
        "survivor_nodes": gauges,
        "survivors_before": before.json("messages", "messages_per_s"),
        "survivors_detection": detection.json("messages", "messages_per_s"),
        "survivors_takeover": takeover.json("messages", "messages_per_s"),
        "survivors_during": during.json("messages", "messages_per_s"),
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let h = &v["herd"];
    let p = &v["params"];
    let mut t = Table::new(
        format!(
            "resume-cluster: {} sessions on node 0 of {} (lease {} ms), SIGKILLed: {} resumed in {} s \
             (first answer other than 409 after {} s, then {} s); {} retries after 409, {} failed attempts, \
             {} lost, {} not resumed; broadcast after: {} of {}",
            num(&h["sessions"]),
            num(&p["nodes"]),
            num(&p["lease_ttl_ms"]),
            if h["resumed"] == h["sessions"] {
                "all".to_owned()
            } else {
                num(&h["resumed"])
            },
            num(&h["time_to_all_resumed_s"]),
            num(&h["kill_to_first_answer_s"]),
            num(&h["first_answer_to_all_resumed_s"]),
            num(&h["retries_409"]),
            num(&h["failed_attempts"]),
            num(&h["lost"]),
            num(&h["unresumed"]),
            num(&h["broadcast_after"]["received"]),
            num(&h["broadcast_after"]["expected"]),
        ),
        &latency_header(&["what", "count", "errors"]),
    );
    let mut cells = vec![
        num(&h["resume_latency"]["count"]),
        num(&Value::from(
            h["lost"].as_u64().unwrap_or(0) + h["unresumed"].as_u64().unwrap_or(0),
        )),
    ];
    cells.extend(latency_cells(&h["resume_latency"]));
    t.row("resume (last attempt: connect → every kept message)", cells);
    for (label, key) in [
        ("survivors before the kill", "survivors_before"),
        ("survivors, death not yet known", "survivors_detection"),
        ("survivors, while the herd resumes", "survivors_takeover"),
        ("survivors during (both)", "survivors_during"),
    ] {
        let r = &v[key];
        let mut cells = vec![num(&r["messages"]), num(&r["errors"])];
        cells.extend(latency_cells(&r["latency"]));
        t.row(label, cells);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_label() {
        let page = "# TYPE switchboard_resumes_total counter\n\
            switchboard_resumes_total{result=\"busy\"} 7\n\
            switchboard_resumes_total{result=\"resumed\",stage=\"prod\"} 3\n\
            switchboard_resumes_total{result=\"resumed\",stage=\"dev\"} 2\n\
            switchboard_resumes_totals{result=\"resumed\"} 100\n\
            switchboard_sessions_suspended 4\n";
        let resumes = by_label(page, "switchboard_resumes_total", "result");
        assert_eq!(resumes.get("busy"), Some(&7.0));
        assert_eq!(resumes.get("resumed"), Some(&5.0));
        assert_eq!(resumes.len(), 2);
        let suspended = by_label(page, "switchboard_sessions_suspended", "");
        assert_eq!(suspended.get(""), Some(&4.0));
    }

    #[test]
    fn retry_delays_are_jittered_around_the_mean() {
        let mean = Duration::from_millis(500);
        let delays: Vec<Duration> = (0..200).map(|i| jittered(mean, i, 1)).collect();
        assert!(delays.iter().all(|d| *d >= mean / 2 && *d < mean * 3 / 2));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "{} distinct", distinct.len());
        assert_ne!(jittered(mean, 3, 1), jittered(mean, 3, 2));
    }
}
