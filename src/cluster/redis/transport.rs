//! How Redis is reached, on either topology: one server (`cluster.redis_url`) or a Redis
//! Cluster (`cluster.redis_cluster_nodes`). The rest of the backplane is the same on both.
//!
//! Owns the command connection ([`Conn`]: a multiplexed connection that reconnects by itself,
//! or a cluster connection that routes each command to its slot's node and follows `MOVED`,
//! failovers and topology changes), publishing (`PUBLISH`, or sharded `SPUBLISH` on a
//! cluster), and the subscriber link: [`Sink`] sends (un)subscribes, [`Arrivals`] yields what
//! arrives.
//!
//! On a cluster, every channel is a shard channel (`SSUBSCRIBE` per channel, since the
//! channels of one link span slots), so a message crosses only the shard that owns its slot
//! and reaches only the nodes subscribed there. A subscription can vanish without the link
//! closing — a node of the cluster disconnected (failover), or the server's own
//! `sunsubscribe` when a slot moved to another shard — so the link reports those as
//! [`Arrival::Lost`] / [`Arrival::Unsubscribed`], and the subscriber rebuilds it: a new link
//! subscribes everything afresh on the nodes that own the slots now.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Script, TlsCertificates, Value,
};
use tokio::sync::{OnceCell, mpsc};

use crate::config::ClusterSettings;

/// How long connecting, and each command, may take before it fails.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// Pushes (messages and notices) a cluster link buffers before its reader takes them; a link
/// whose reader falls this far behind is given up (and rebuilt), never grown.
const PUSH_QUEUE: usize = 65_536;

/// The Redis deployment the backplane talks to.
#[expect(
    clippy::large_enum_variant,
    reason = "one per node, never moved around"
)]
pub(super) enum Redis {
    /// One Redis server.
    Server(redis::Client),
    /// A Redis Cluster: the client for commands, and the seed nodes each subscriber
    /// link's own client is built from.
    Cluster {
        client: ClusterClient,
        seeds: Vec<String>,
        certs: Option<TlsCertificates>,
    },
}

impl Redis {
    /// Reads the topology from `settings` (no connection is made yet; a CA file is read).
    pub(super) fn open(settings: &ClusterSettings) -> RedisResult<Self> {
        let certs = tls_certificates(settings)?;
        if settings.redis_cluster_nodes.is_empty() {
            let url = settings.redis_url.expose();
            return match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map(Self::Server);
        }
        let seeds = settings_nodes(settings);
        let client = cluster_builder(seeds.clone(), certs.clone()).build()?;
        Ok(Self::Cluster {
            client,
            seeds,
            certs,
        })
    }

    /// The shared command connection. Lazy: a node starts while Redis is down, and the
    /// first command that finds it up connects.
    pub(super) fn commands(&self) -> RedisResult<Conn> {
        match self {
            Self::Server(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(IO_TIMEOUT))
                    .set_response_timeout(Some(IO_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Server(client.get_connection_manager_lazy(config)?))
            }
            Self::Cluster { client, .. } => Ok(Conn::Cluster(LazyCluster(Arc::new((
                client.clone(),
                OnceCell::new(),
            ))))),
        }
    }

    /// A new subscriber link, subscribed to `channels` (each confirmed by Redis).
    pub(super) async fn subscribe(&self, channels: &[String]) -> RedisResult<(Sink, Arrivals)> {
        match self {
            Self::Server(client) => {
                let (mut sink, stream) = client.get_async_pubsub().await?.split();
                sink.subscribe(channels).await?;
                Ok((Sink::Server(sink), Arrivals::Server(stream)))
            }
            Self::Cluster { seeds, certs, .. } => {
                let (tx, rx) = mpsc::channel(PUSH_QUEUE);
                let overflow = Arc::new(AtomicBool::new(false));
                let flag = overflow.clone();
                // The library calls this for every push; a full queue is remembered (and the
                // link given up by its reader) rather than blocking the library's task.
                let sender = move |push: PushInfo| {
                    if tx.try_send(push).is_err() {
                        flag.store(true, Ordering::Relaxed);
                    }
                    Ok::<(), ()>(())
                };
                let client = cluster_builder(seeds.clone(), certs.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?;
                let mut conn = client.get_async_connection().await?;
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok((Sink::Cluster(conn), Arrivals::Cluster { rx, overflow }))
            }
        }
    }
}

/// The seed nodes' URLs.
fn settings_nodes(settings: &ClusterSettings) -> Vec<String> {
    settings
        .redis_cluster_nodes
        .iter()
        .map(|n| n.expose().to_owned())
        .collect()
}

/// The cluster client's settings: short timeouts (a caller waiting on Redis answers 503
/// rather than hang), a few retries so a failover or a slot move is ridden through.
fn cluster_builder(nodes: Vec<String>, certs: Option<TlsCertificates>) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(IO_TIMEOUT)
        .response_timeout(IO_TIMEOUT)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    match certs {
        Some(certs) => builder.certs(certs),
        None => builder,
    }
}

/// The CAs of `cluster.redis_ca_file`, if set (else rustls trusts the WebPKI roots).
fn tls_certificates(settings: &ClusterSettings) -> RedisResult<Option<TlsCertificates>> {
    if settings.redis_ca_file.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(&settings.redis_ca_file)?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

/// The command connection: cloned per use (cheap; every clone shares one connection).
#[derive(Clone)]
pub(super) enum Conn {
    /// To one server.
    Server(ConnectionManager),
    /// To a cluster.
    Cluster(LazyCluster),
}

/// A cluster connection made on first use (and retried on the next use if that failed).
#[derive(Clone)]
pub(super) struct LazyCluster(Arc<(ClusterClient, OnceCell<ClusterConnection>)>);

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        let (client, conn) = &*self.0;
        conn.get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
    }
}

impl Conn {
    /// Publishes `message` on `channel` (sharded on a cluster); returns how many subscribers
    /// received it (on a cluster: those on the shard's node that took it).
    pub(super) async fn publish(&mut self, channel: &str, message: &[u8]) -> RedisResult<i64> {
        let command = match self {
            Self::Server(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        };
        redis::cmd(command)
            .arg(channel)
            .arg(message)
            .query_async(self)
            .await
    }

    /// Publishes `message` on `channel` only if every node listed in the subscriber set
    /// `set` (same hash slot) can receive it: Redis counts at least as many subscribers on
    /// the channel as the set lists. Checked and published atomically, by one script.
    pub(super) async fn publish_checked(
        &mut self,
        set: &str,
        channel: &str,
        message: &[u8],
    ) -> RedisResult<Published> {
        let (count, publish) = match self {
            Self::Server(_) => ("NUMSUB", "PUBLISH"),
            Self::Cluster(_) => ("SHARDNUMSUB", "SPUBLISH"),
        };
        let (received, subscribed, listed): (i64, i64, i64) = CHECKED_PUBLISH
            .key(set)
            .arg(channel)
            .arg(message)
            .arg(count)
            .arg(publish)
            .invoke_async(self)
            .await?;
        Ok(if received < 0 {
            Published::Refused { subscribed, listed }
        } else {
            Published::Delivered
        })
    }

    /// The shortest uptime of the Redis servers (one, or every node of a cluster); `None`
    /// if any cannot be read.
    pub(super) async fn min_uptime(&mut self) -> Option<Duration> {
        let info: Value = redis::cmd("INFO")
            .arg("server")
            .query_async(self)
            .await
            .ok()?;
        let mut texts = Vec::new();
        collect_texts(info, &mut texts);
        if texts.is_empty() {
            return None;
        }
        texts
            .iter()
            .map(|t| super::liveness::uptime_from_info(t))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }
}

/// The script behind [`Conn::publish_checked`]: KEYS[1] the subscriber set; ARGV the
/// channel, the message, the subscriber-count subcommand and the publish command of the
/// topology. Answers `{receivers, subscribed, listed}`, receivers -1 when refused.
static CHECKED_PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local listed = redis.call('SCARD', KEYS[1])
local subscribed = redis.call('PUBSUB', ARGV[3], ARGV[1])[2]
if subscribed < listed then
  return {-1, subscribed, listed}
end
return {redis.call(ARGV[4], ARGV[1], ARGV[2]), subscribed, listed}
",
    )
});

/// What became of a checked publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    /// Every listed node was subscribed; Redis took the message.
    Delivered,
    /// Fewer subscribers than listed nodes: not published.
    Refused { subscribed: i64, listed: i64 },
}

/// Every text inside `value` (one `INFO` reply, or a map of them by node).
fn collect_texts(value: Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(bytes) => out.push(String::from_utf8_lossy(&bytes).into_owned()),
        Value::VerbatimString { text, .. } => out.push(text),
        Value::SimpleString(text) => out.push(text),
        Value::Array(items) | Value::Set(items) => {
            items.into_iter().for_each(|v| collect_texts(v, out));
        }
        Value::Map(pairs) => pairs.into_iter().for_each(|(_, v)| collect_texts(v, out)),
        _ => {}
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let conn = lazy.get().await?;
                per_slot(conn, pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

/// Runs `pipeline` on a cluster. The cluster client takes a pipeline only when all its
/// commands share one slot, while the backplane's batches touch several (a node's records
/// and the groups its connections join): a plain (non-transaction) pipeline is split into one
/// per slot, in order within each, run concurrently, and its answers put back in order.
async fn per_slot(
    mut conn: ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let slot_of = |cmd: &Cmd| match cmd.args_iter().nth(1) {
        Some(redis::Arg::Simple(key)) => Some(Slot::for_key(key)),
        _ => None,
    };
    let first = pipeline.cmd_iter().next().map(slot_of);
    let one_slot = pipeline.cmd_iter().all(|cmd| Some(slot_of(cmd)) == first);
    if pipeline.is_transaction() || one_slot {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut parts: Vec<(Vec<usize>, Pipeline)> = Vec::new();
    for (index, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = slot_of(cmd);
        let part = match slots.iter().position(|s| *s == slot) {
            Some(part) => part,
            None => {
                slots.push(slot);
                parts.push((Vec::new(), Pipeline::new()));
                parts.len() - 1
            }
        };
        parts[part].0.push(index);
        parts[part].1.add_command(cmd.clone());
    }
    let answers = futures_util::future::try_join_all(parts.iter().map(|(_, part)| {
        let mut conn = conn.clone();
        async move { conn.req_packed_commands(part, 0, part.len()).await }
    }))
    .await?;
    let mut ordered = vec![Value::Nil; pipeline.len()];
    for ((indices, _), values) in parts.iter().zip(answers) {
        for (index, value) in indices.iter().zip(values) {
            ordered[*index] = value;
        }
    }
    Ok(ordered.into_iter().skip(offset).take(count).collect())
}

/// The half of a subscriber link that (un)subscribes; cloned per use.
#[derive(Clone)]
pub(super) enum Sink {
    /// A pub/sub connection to one server.
    Server(PubSubSink),
    /// A RESP3 cluster connection whose pushes feed the link's [`Arrivals`].
    Cluster(ClusterConnection),
}

impl Sink {
    /// Subscribes to `channel`, confirmed by Redis.
    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Server(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    /// Unsubscribes from `channel`.
    pub(super) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Server(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// What a subscriber link yields.
#[derive(Debug)]
pub(super) enum Arrival {
    /// A message published on a subscribed channel.
    Message(Bytes),
    /// Redis dropped the link's subscription to this channel (on a cluster: the channel's
    /// slot moved, or this link unsubscribed it).
    Unsubscribed(String),
    /// Part of the link was lost: its subscriptions can no longer be trusted.
    Lost,
}

/// The half of a subscriber link that reads what arrives.
pub(super) enum Arrivals {
    /// Messages of a pub/sub connection to one server.
    Server(PubSubStream),
    /// Pushes of a cluster connection.
    Cluster {
        rx: mpsc::Receiver<PushInfo>,
        /// Set when a push found the queue full (one was dropped).
        overflow: Arc<AtomicBool>,
    },
}

impl Arrivals {
    /// The next arrival; `None` once the link is closed.
    pub(super) async fn next(&mut self) -> Option<Arrival> {
        match self {
            Self::Server(stream) => stream
                .next()
                .await
                .map(|m| Arrival::Message(Bytes::copy_from_slice(m.get_payload_bytes()))),
            Self::Cluster { rx, overflow } => loop {
                let push = rx.recv().await?;
                if overflow.load(Ordering::Relaxed) {
                    return Some(Arrival::Lost);
                }
                if let Some(arrival) = arrival_of(push) {
                    return Some(arrival);
                }
            },
        }
    }
}

/// What a cluster push means to the subscriber (`None`: nothing, e.g. a subscribe notice).
fn arrival_of(push: PushInfo) -> Option<Arrival> {
    match push.kind {
        PushKind::SMessage | PushKind::Message => match push.data.into_iter().nth(1)? {
            Value::BulkString(bytes) => Some(Arrival::Message(Bytes::from(bytes))),
            _ => None,
        },
        PushKind::SUnsubscribe | PushKind::Unsubscribe => match push.data.into_iter().next()? {
            Value::BulkString(bytes) => Some(Arrival::Unsubscribed(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
            _ => None,
        },
        PushKind::Disconnection => Some(Arrival::Lost),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_become_arrivals() {
        let message = PushInfo {
            kind: PushKind::SMessage,
            data: vec![
                Value::BulkString(b"ch".to_vec()),
                Value::BulkString(b"payload".to_vec()),
            ],
        };
        assert!(matches!(arrival_of(message), Some(Arrival::Message(b)) if b == "payload"));
        let moved = PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![Value::BulkString(b"sb:{g.x}:bcast".to_vec()), Value::Int(0)],
        };
        assert!(
            matches!(arrival_of(moved), Some(Arrival::Unsubscribed(c)) if c == "sb:{g.x}:bcast")
        );
        let lost = PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        assert!(matches!(arrival_of(lost), Some(Arrival::Lost)));
        let notice = PushInfo {
            kind: PushKind::SSubscribe,
            data: vec![Value::BulkString(b"ch".to_vec()), Value::Int(1)],
        };
        assert!(arrival_of(notice).is_none());
    }

    #[test]
    fn info_texts_are_found_in_maps() {
        let info = Value::Map(vec![
            (
                Value::SimpleString("a".into()),
                Value::BulkString(b"uptime_in_seconds:30\r\n".to_vec()),
            ),
            (
                Value::SimpleString("b".into()),
                Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: "uptime_in_seconds:7\r\n".into(),
                },
            ),
        ]);
        let mut texts = Vec::new();
        collect_texts(info, &mut texts);
        assert_eq!(texts.len(), 2);
    }
}
