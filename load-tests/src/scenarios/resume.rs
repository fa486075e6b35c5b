//! `resume`: resumable sessions (docs/resume.md) on one node. N clients open resumable
//! sessions and have their TCP connections reset (no close frame), in `--steps` steps, so
//! the gateway keeps N suspended sessions: the slope of its RSS over the steps is the
//! memory per suspended session, and after `--messages` `@broadcast`s of `--pad` bytes
//! (waiting in every history; the second half measured) the memory per kept message.
//! Then `--sample` sessions resume one at a time (resume latency: TCP connect to the
//! welcome and every kept message), and the rest resume as a herd, their starts spread
//! over `--spread-ms`, while survivors keep echoing at a fixed rate: the time until every
//! one resumed with its messages, errors, lost messages, and the survivors' latency before
//! and during the herd; then as many plain connects in the same spread, for comparison.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::{Common, Expect, Loop, round_trips};
use crate::client::{self, HttpConn, SourceAddrs, Ws};
use crate::procs::{Gateway, GatewayConfig, gateway_binary, rss_kib};
use crate::report::{Table, latency_cells, latency_header, num};
use crate::stats::{self, Sample, round2};

/// The subprotocol a client offers to ask for a resumable session.
const SUBPROTOCOL: &str = "switchboard.resume.v1";

/// `loadgen resume` options.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Suspended sessions (the herd is this minus `--sample`).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Sessions resumed one at a time for the resume latency.
    #[arg(long, default_value_t = 500)]
    pub sample: usize,
    /// Handshakes in flight while opening the sessions.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The herd's resumes start spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub spread_ms: u64,
    /// Connected clients echoing throughout (the survivors).
    #[arg(long, default_value_t = 50)]
    pub survivors: usize,
    /// Each survivor sends one message every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub survivor_every_ms: u64,
    /// Steps in which the sessions are opened and cut (RSS is read after each).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Messages (`@broadcast`s) every suspended session is sent while suspended.
    #[arg(long, default_value_t = 4)]
    pub messages: usize,
    /// Bytes of each of those messages.
    #[arg(long, default_value_t = 1000)]
    pub pad: usize,
    /// Milliseconds to wait before reading RSS.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
}

/// A resumable session as the client knows it.
pub(super) struct Session {
    /// Its connection id (what backends POST to).
    pub(super) id: String,
    /// The resume token from the welcome.
    pub(super) token: String,
    /// The offset of the last frame processed.
    pub(super) offset: u64,
}

/// Opens a resumable WebSocket from `source` (resuming when `resume` is given). A refused
/// handshake is a `tungstenite::Error::Http` inside the error (see [`refused_with`]).
pub(super) async fn open(
    addr: SocketAddr,
    source: Ipv4Addr,
    resume: Option<&Session>,
) -> Result<Ws> {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let query = resume.map_or_else(String::new, |s| {
            format!("?sb_resume={}&sb_offset={}", s.token, s.offset)
        });
        let mut request = format!("ws://{addr}/prod{query}").into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", SUBPROTOCOL.parse()?);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            tcp,
            Some(client::client_config()),
        )
        .await?;
        Ok::<_, anyhow::Error>(ws)
    };
    tokio::time::timeout(client::IO_LIMIT, attempt)
        .await
        .map_err(|_| anyhow!("connect from {source} timed out"))?
}

/// The HTTP status a handshake was refused with, if that is why `open` failed.
pub(super) fn refused_with(error: &anyhow::Error) -> Option<u16> {
    match error.downcast_ref::<tokio_tungstenite::tungstenite::Error>()? {
        tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// The next frame as JSON.
pub(super) async fn next_json(ws: &mut Ws) -> Result<Value> {
    let text = client::next_text(ws).await?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// Resets the connection (SO_LINGER 0): the gateway sees it dropped without a close frame.
fn cut(ws: Ws) {
    let _ = ws.get_ref().set_zero_linger();
    drop(ws);
}

/// Resumes `session` and awaits its welcome and the `waiting` messages kept for it, in
/// order.
async fn resume_one(
    addr: SocketAddr,
    source: Ipv4Addr,
    session: &Session,
    waiting: u64,
) -> Result<Ws> {
    let mut ws = open(addr, source, Some(session)).await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["resumed"] != true {
        bail!("not resumed: {welcome}");
    }
    for offset in session.offset + 1..=session.offset + waiting {
        let message = next_json(&mut ws).await?;
        if message["o"] != offset {
            bail!("lost: expected offset {offset}, got {message}");
        }
    }
    Ok(ws)
}

/// Opens one resumable session from `source` and reads its welcome.
pub(super) async fn open_session(addr: SocketAddr, source: Ipv4Addr) -> Result<(Ws, Session)> {
    let mut ws = open(addr, source, None).await?;
    let welcome = next_json(&mut ws).await?;
    let (Some(id), Some(token)) = (welcome["connectionId"].as_str(), welcome["token"].as_str())
    else {
        bail!("welcome {welcome}");
    };
    let session = Session {
        id: id.to_owned(),
        token: token.to_owned(),
        offset: 0,
    };
    Ok((ws, session))
}

/// Opens `n` resumable sessions (at most `concurrency` handshakes at once) and reads each
/// welcome; returns the sockets and each session (or why it failed).
async fn open_many(
    addr: SocketAddr,
    sources: &Arc<SourceAddrs>,
    n: usize,
    concurrency: usize,
) -> (Vec<Ws>, Vec<Result<Session, String>>) {
    let opened: Vec<Result<(Ws, Session)>> = futures_util::stream::iter(0..n)
        .map(|_| open_session(addr, sources.next()))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut sockets = Vec::new();
    let mut sessions = Vec::new();
    for r in opened {
        match r {
            Ok((ws, session)) => {
                sockets.push(ws);
                sessions.push(Ok(session));
            }
            Err(e) => sessions.push(Err(format!("{e:#}"))),
        }
    }
    (sockets, sessions)
}

/// A herd of `n` plain (not resumable) connects spread over `spread`: what the same
/// number of handshakes costs without resume, for comparison.
async fn connect_herd(addr: SocketAddr, n: usize, spread: Duration) -> Sample {
    let sources = Arc::new(SourceAddrs::fresh());
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let sources = sources.clone();
            let at = start + spread.mul_f64(i as f64 / n.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let t = Instant::now();
                let result = client::ws_connect(addr, "/prod", sources.next()).await;
                (t.elapsed(), Instant::now(), result)
            })
        })
        .collect();
    let mut sample = Sample::default();
    let mut last = start;
    let mut held = Vec::new();
    for task in tasks {
        match task.await {
            Ok((took, done, Ok(ws))) => {
                stats::record(&mut sample.hist, took.as_micros() as u64);
                last = last.max(done);
                held.push(ws);
            }
            Ok((_, _, Err(e))) => sample.error(format!("{e:#}")),
            Err(e) => sample.error(e.to_string()),
        }
    }
    sample.elapsed = last.duration_since(start).as_secs_f64();
    for mut ws in held {
        let _ = futures_util::SinkExt::close(&mut ws).await;
    }
    sample
}

/// `switchboard_sessions_suspended` from /metrics.
async fn suspended(http: &mut HttpConn) -> Result<u64> {
    let (_, body) = http.request(hyper::Method::GET, "/metrics", "").await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("switchboard_sessions_suspended"))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Waits until the gateway reports `n` suspended sessions.
async fn until_suspended(http: &mut HttpConn, n: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let now = suspended(http).await?;
        if now as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {now} of {n} sessions suspended after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The survivors' echo loop for about `secs`.
fn survivors(
    addr: SocketAddr,
    args: &Args,
    secs: f64,
    limit: Duration,
) -> tokio::task::JoinHandle<Result<Sample>> {
    let every = Duration::from_millis(args.survivor_every_ms.max(1));
    let size = Loop {
        conns: args.survivors.max(1),
        msgs: ((secs * 1000.0) as u64 / every.as_millis().max(1) as u64).max(1) as usize,
        warmup: 5,
        pad: 32,
        every: Some(every),
    };
    tokio::spawn(async move { round_trips(addr, "/prod", size, Expect::Same, limit).await })
}

/// Runs the scenario.
pub async fn run(args: &Args) -> Result<Value> {
    let binary = gateway_binary(args.common.gateway.as_deref())?;
    let limit = args.common.limit();
    let window_secs = (limit.as_secs() * 4).max(120);
    let config = GatewayConfig {
        resume_window_secs: Some(window_secs),
        ..GatewayConfig::echo()
    };
    let gw = Gateway::start(&binary, &config)?;
    let addr = gw.client_addr;
    let mut http = HttpConn::new(gw.management_addr);
    let settle = Duration::from_millis(args.settle_ms);
    let sample_n = args.sample.min(args.sessions);

    tokio::time::sleep(settle.min(Duration::from_millis(500))).await;
    let rss_start = rss_kib(gw.pid())?;
    // Sessions are opened and cut in steps, so at most a step's sockets are open at once:
    // the memory freed by one step's sockets is reused by the next one's, and the RSS
    // slope over the steps is what a suspended session keeps.
    let sources = Arc::new(SourceAddrs::fresh());
    let steps = args.steps.max(2);
    let mut sessions = Vec::new();
    let mut open_errors = Sample::default();
    let mut points = Vec::new();
    let mut rss_connected_peak = 0;
    for step in 1..=steps {
        let goal = args.sessions * step / steps;
        let need = goal.saturating_sub(sessions.len() + open_errors.errors as usize);
        let (sockets, opened) = open_many(addr, &sources, need, args.concurrency).await;
        for r in opened {
            match r {
                Ok(s) => sessions.push(s),
                Err(e) => open_errors.error(e),
            }
        }
        rss_connected_peak = rss_connected_peak.max(rss_kib(gw.pid())?);
        for ws in sockets {
            cut(ws);
        }
        until_suspended(&mut http, sessions.len(), limit).await?;
        tokio::time::sleep(settle).await;
        points.push((sessions.len() as f64, rss_kib(gw.pid())? as f64));
    }
    if sessions.is_empty() {
        bail!("no session opened: {:?}", open_errors.first_error);
    }
    let rss_suspended = points.last().map_or(0, |p| p.1 as u64);
    // The slope from the second step on (the first one also grows the pools).
    let (kib_per_suspended, r2) = stats::fit(&points[1..]);
    // Messages waiting in every history, in two halves: the first may fill memory the
    // allocator kept; the second half's RSS growth is what a kept message costs.
    let half = args.messages.div_ceil(2).max(1);
    let mut rss_after = Vec::new();
    for _ in 0..2 {
        for _ in 0..half {
            let (status, _) = http
                .request(hyper::Method::POST, "/@broadcast", "m".repeat(args.pad))
                .await?;
            if status != 202 && status != 200 {
                bail!("broadcast answered {status}");
            }
        }
        tokio::time::sleep(settle).await;
        rss_after.push(rss_kib(gw.pid())?);
    }
    let waiting = (2 * half) as u64;
    let n = sessions.len() as f64;

    // Resume latency: one at a time.
    let mut latency = Sample::default();
    let started = Instant::now();
    let mut resumed = Vec::new();
    for session in sessions.iter().take(sample_n) {
        let t = Instant::now();
        match resume_one(addr, sources.next(), session, waiting).await {
            Ok(ws) => {
                stats::record(&mut latency.hist, t.elapsed().as_micros() as u64);
                resumed.push(ws);
            }
            Err(e) => latency.error(format!("{e:#}")),
        }
    }
    latency.elapsed = started.elapsed().as_secs_f64();
    // A clean close ends these sessions (a dropped socket would suspend them again).
    for mut ws in resumed {
        let _ = futures_util::SinkExt::close(&mut ws).await;
    }

    // The herd, while survivors echo: before (alone), then during.
    let herd: Vec<Session> = sessions.into_iter().skip(sample_n).collect();
    let before = survivors(addr, args, 2.0, limit).await??;
    let spread = Duration::from_millis(args.spread_ms);
    let during = survivors(addr, args, spread.as_secs_f64() + 2.0, limit);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let herd_n = herd.len();
    let herd_start = Instant::now();
    let tasks: Vec<_> = herd
        .into_iter()
        .enumerate()
        .map(|(i, session)| {
            let sources = sources.clone();
            let at = herd_start + spread.mul_f64(i as f64 / herd_n.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let t = Instant::now();
                let result = resume_one(addr, sources.next(), &session, waiting).await;
                (t.elapsed(), Instant::now(), result)
            })
        })
        .collect();
    let mut herd_sample = Sample::default();
    let mut last_done = herd_start;
    let mut lost = 0u64;
    let mut held = Vec::new();
    for task in tasks {
        let (took, done, result) = task.await?;
        match result {
            Ok(ws) => {
                stats::record(&mut herd_sample.hist, took.as_micros() as u64);
                last_done = last_done.max(done);
                held.push(ws);
            }
            Err(e) => {
                let why = format!("{e:#}");
                if why.starts_with("lost") || why.starts_with("not resumed") {
                    lost += 1;
                }
                herd_sample.error(why);
            }
        }
    }
    herd_sample.elapsed = last_done.duration_since(herd_start).as_secs_f64();
    let during = during.await??;
    let suspended_after = suspended(&mut http).await?;
    drop(held);

    // The same number of plain connects in the same spread, for comparison.
    let connects = connect_herd(addr, herd_n, spread).await;
    let before_json = before.json("messages", "messages_per_s");
    let during_json = during.json("messages", "messages_per_s");
    let herd_json = herd_sample.json("resumed", "resumes_per_s");
    let ok = open_errors.errors == 0
        && latency.errors == 0
        && herd_sample.errors == 0
        && connects.errors == 0
        && before.errors == 0
        && during.errors == 0
        && suspended_after == 0;
    let per_message = (rss_after[1] as f64 - rss_after[0] as f64) * 1024.0 / (n * half as f64);
    Ok(json!({
        "scenario": "resume",
        "ok": ok,
        // The herd's resumes per second (its count over the time until the last one).
        "throughput_per_s": herd_json["resumes_per_s"],
        "params": {"sessions": args.sessions, "sample": sample_n, "spread_ms": args.spread_ms,
                   "survivors": args.survivors, "survivor_every_ms": args.survivor_every_ms,
                   "steps": steps, "messages": waiting, "pad_bytes": args.pad},
        "memory": {
            "sessions": n as u64,
            "rss_start_kib": rss_start,
            "rss_connected_peak_kib": rss_connected_peak,
            "rss_suspended_kib": rss_suspended,
            "rss_after_messages_kib": rss_after,
            "steps": points.iter().map(|p| json!({"suspended": p.0, "rss_kib": p.1})).collect::<Vec<_>>(),
            "kib_per_suspended_session": round2(kib_per_suspended),
            "r2": round2(r2),
            "bytes_per_kept_message": round2(per_message),
            "open_errors": open_errors.errors,
            "open_first_error": open_errors.first_error,
        },
        "resume_latency": latency.json("resumed", "resumes_per_s"),
        "herd": {
            "sessions": herd_n,
            "time_to_all_resumed_s": round2(herd_sample.elapsed),
            "lost": lost,
            "suspended_left": suspended_after,
            "result": herd_json,
        },
        "connect_herd": connects.json("connected", "connects_per_s"),
        "survivors_before": before_json,
        "survivors_during": during_json,
    }))
}

/// The readable table.
pub fn table(v: &Value) -> Table {
    let m = &v["memory"];
    let h = &v["herd"];
    let mut t = Table::new(
        format!(
            "resume: {} suspended sessions: {} KiB each (R² {}), {} B per kept message of {} B; herd of {}: all resumed in {} s, {} errors, {} lost (as plain connects: {} s)",
            num(&m["sessions"]),
            num(&m["kib_per_suspended_session"]),
            num(&m["r2"]),
            num(&m["bytes_per_kept_message"]),
            num(&v["params"]["pad_bytes"]),
            num(&h["sessions"]),
            num(&h["time_to_all_resumed_s"]),
            num(&h["result"]["errors"]),
            num(&h["lost"]),
            num(&v["connect_herd"]["elapsed_s"]),
        ),
        &latency_header(&["what", "count", "errors"]),
    );
    for (label, r, count) in [
        ("resume, one at a time", &v["resume_latency"], "resumed"),
        ("resume, in the herd", &h["result"], "resumed"),
        ("plain connect, in a herd", &v["connect_herd"], "connected"),
        ("survivors before", &v["survivors_before"], "messages"),
        ("survivors during", &v["survivors_during"], "messages"),
    ] {
        let mut cells = vec![num(&r[count]), num(&r["errors"])];
        cells.extend(latency_cells(&r["latency"]));
        t.row(label, cells);
    }
    t
}
