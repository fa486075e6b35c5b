//! The load generator's side of the wire: WebSocket clients bound to 127.x.y.z source
//! addresses (one address has ~28,000 ephemeral ports; a run spreads over many so
//! TIME_WAIT sockets from earlier runs never exhaust them), the whoami round trip, a
//! keep-alive HTTP/1.1 connection for the management API and the HTTP backend, and
//! closed-loop callers POSTing through it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::procs::TOKEN;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Limit on any single connect, handshake or reply wait.
pub const IO_LIMIT: Duration = Duration::from_secs(15);

/// Source addresses 127.`a`.`b`.1 ..= 127.`a`.`b`.250, handed out round-robin.
pub struct SourceAddrs {
    a: u8,
    b: u8,
    next: AtomicU32,
}

/// Blocks handed out by this process (each gets its own third octet).
static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

impl SourceAddrs {
    /// A block no other [`SourceAddrs`] of this process uses; the second octet comes from
    /// the process id, so successive runs land on other addresses too.
    pub fn fresh() -> Self {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        Self::block(std::process::id(), block)
    }

    /// The block for (`run`, `index`): idle workers are given theirs by the parent.
    pub fn block(run: u32, index: u32) -> Self {
        SourceAddrs {
            a: 10 + (run % 200) as u8,
            b: (index % 250) as u8 + 1,
            next: AtomicU32::new(0),
        }
    }

    /// "a.b" — what a worker is told on its command line.
    pub fn prefix(&self) -> String {
        format!("{}.{}", self.a, self.b)
    }

    /// Parses [`SourceAddrs::prefix`].
    pub fn from_prefix(prefix: &str) -> Result<Self> {
        let (a, b) = prefix
            .split_once('.')
            .ok_or_else(|| anyhow!("bad source prefix {prefix:?} (want A.B)"))?;
        Ok(SourceAddrs {
            a: a.parse()?,
            b: b.parse()?,
            next: AtomicU32::new(0),
        })
    }

    /// The next source address.
    pub fn next(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ipv4Addr::new(127, self.a, self.b, (n % 250) as u8 + 1)
    }
}

/// Client WebSocket settings: small eager read buffer (thousands of clients live in one
/// process), every frame written at once.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
}

/// Opens a TCP connection from `source` to `addr` and performs the WebSocket handshake on
/// `path`; the 101 is required.
pub async fn ws_connect(addr: SocketAddr, path: &str, source: Ipv4Addr) -> Result<Ws> {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let url = format!("ws://{addr}{path}");
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(url, tcp, Some(client_config())).await?;
        if response.status() != 101 {
            bail!("handshake answered {}", response.status());
        }
        Ok(ws)
    };
    tokio::time::timeout(IO_LIMIT, attempt)
        .await
        .map_err(|_| anyhow!("connect to {addr} from {source} timed out"))?
}

/// The next text frame (pings and pongs skipped); an error on close or timeout.
pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        let frame = tokio::time::timeout(IO_LIMIT, ws.next())
            .await
            .map_err(|_| anyhow!("no reply within {IO_LIMIT:?}"))?;
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => bail!("unexpected frame {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// Asks the `whoami` route for this connection's id.
pub async fn whoami(ws: &mut Ws) -> Result<String> {
    ws.send(Message::text(r#"{"action":"whoami"}"#)).await?;
    let reply = next_text(ws).await?;
    let v: Value = serde_json::from_str(&reply).with_context(|| format!("whoami: {reply}"))?;
    v["connectionId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("whoami answered {reply}"))
}

/// Connects `n` clients to `path` (at most `concurrency` handshakes at once); returns
/// them in order.
pub async fn connect_many(
    addr: SocketAddr,
    path: &str,
    n: usize,
    concurrency: usize,
    sources: &SourceAddrs,
) -> Result<Vec<Ws>> {
    let results: Vec<Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|_| ws_connect(addr, path, sources.next()))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Connects `n` clients to the gateway's `/prod` (at most `concurrency` handshakes at
/// once), each asking whoami; returns them in order with their ids.
pub async fn connect_members(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    sources: &SourceAddrs,
) -> Result<Vec<(Ws, String)>> {
    let results: Vec<Result<(Ws, String)>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let source = sources.next();
            async move {
                let mut ws = ws_connect(addr, "/prod", source).await?;
                let id = whoami(&mut ws).await?;
                Ok((ws, id))
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// One keep-alive HTTP/1.1 connection (requests go one at a time), with the management
/// bearer token on every request.
pub struct HttpConn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpConn {
    /// A connection to `addr`, opened on first use (and again after an error).
    pub fn new(addr: SocketAddr) -> Self {
        HttpConn { addr, sender: None }
    }

    async fn open(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            tcp.set_nodelay(true)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| anyhow!("no HTTP connection"))
    }

    /// Sends one request; returns the status and body.
    pub async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(u16, Bytes)> {
        let addr = self.addr;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.into()))?;
        let exchange = async {
            let sender = self.open().await?;
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        match tokio::time::timeout(IO_LIMIT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                bail!("HTTP request to {addr}{path} timed out")
            }
        }
    }
}

/// PUTs every id into `group` through `management` using `parallel` connections; returns
/// how many answered 204.
pub async fn join_group(
    management: SocketAddr,
    group: &str,
    ids: &[String],
    parallel: usize,
) -> Result<usize> {
    let chunk = ids.len().div_ceil(parallel.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in ids.chunks(chunk) {
        let part = part.to_vec();
        let group = group.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut http = HttpConn::new(management);
            let mut ok = 0usize;
            for id in part {
                let path = format!("/@groups/{group}/members/{id}");
                let (status, body) = http
                    .request(hyper::Method::PUT, &path, Bytes::new())
                    .await?;
                if status != 204 {
                    bail!(
                        "PUT {path} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                ok += 1;
            }
            Ok::<_, anyhow::Error>(ok)
        }));
    }
    let mut joined = 0;
    for task in tasks {
        joined += task.await??;
    }
    Ok(joined)
}

/// Starts one reader task per client that files every text frame into `deliveries`;
/// dropping the returned set aborts them (and drops the connections).
pub fn spawn_readers(
    clients: Vec<Ws>,
    deliveries: &std::sync::Arc<crate::stats::Deliveries>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for (i, ws) in clients.into_iter().enumerate() {
        set.spawn(read_into(i, ws, deliveries.clone()));
    }
    set
}

/// Files every text frame `frames` yields into `deliveries` as reader `i`, until it ends.
pub async fn read_into<S>(
    i: usize,
    mut frames: S,
    deliveries: std::sync::Arc<crate::stats::Deliveries>,
) where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(frame)) = frames.next().await {
        if let Message::Text(text) = frame {
            deliveries.received(i, text.as_str());
        }
    }
}

/// What closed-loop callers saw: the latency of each accepted POST, every status (or
/// "error"), and the first transport error.
pub struct Posted {
    /// Latencies (µs) of the POSTs answered with the accepted status.
    pub accepted: hdrhistogram::Histogram<u64>,
    /// How many POSTs got each status.
    pub statuses: std::collections::BTreeMap<String, u64>,
    /// The first request that failed below HTTP.
    pub first_error: Option<String>,
}

/// Runs `callers` closed-loop callers against the management API at `management`, each
/// on its own keep-alive connection: caller `c` POSTs what `next(c, i)` gives (a path and
/// a body) for i = 0, 1, … until it gives `None`. A POST answered `accepted` counts its
/// latency.
pub async fn post_closed_loop<F>(
    management: SocketAddr,
    callers: usize,
    accepted: u16,
    next: F,
) -> Result<Posted>
where
    F: Fn(usize, usize) -> Option<(String, Bytes)> + Send + Sync + 'static,
{
    let next = std::sync::Arc::new(next);
    let tasks: Vec<_> = (0..callers.max(1))
        .map(|c| {
            let next = next.clone();
            tokio::spawn(async move {
                let mut http = HttpConn::new(management);
                let mut posted = Posted {
                    accepted: crate::stats::histogram(),
                    statuses: Default::default(),
                    first_error: None,
                };
                for i in 0usize.. {
                    let Some((path, body)) = next(c, i) else {
                        break;
                    };
                    let sent = std::time::Instant::now();
                    let key = match http.request(hyper::Method::POST, &path, body).await {
                        Ok((status, _)) => {
                            if status == accepted {
                                crate::stats::record(
                                    &mut posted.accepted,
                                    sent.elapsed().as_micros() as u64,
                                );
                            }
                            status.to_string()
                        }
                        Err(e) => {
                            posted.first_error.get_or_insert(format!("{e:#}"));
                            "error".to_owned()
                        }
                    };
                    *posted.statuses.entry(key).or_default() += 1;
                }
                posted
            })
        })
        .collect();
    let mut all = Posted {
        accepted: crate::stats::histogram(),
        statuses: Default::default(),
        first_error: None,
    };
    for task in tasks {
        let posted = task.await?;
        let _ = all.accepted.add(&posted.accepted);
        for (k, n) in posted.statuses {
            *all.statuses.entry(k).or_default() += n;
        }
        all.first_error = all.first_error.or(posted.first_error);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_blocks_cycle_within_their_prefix() {
        let s = SourceAddrs::block(3, 4);
        assert_eq!(s.prefix(), "13.5");
        assert_eq!(s.next(), Ipv4Addr::new(127, 13, 5, 1));
        assert_eq!(s.next(), Ipv4Addr::new(127, 13, 5, 2));
        let back = SourceAddrs::from_prefix("13.5").unwrap();
        assert_eq!(back.next(), Ipv4Addr::new(127, 13, 5, 1));
        assert!(SourceAddrs::from_prefix("13").is_err());
    }
}
