//! The cluster: where a connection lives, delivering to it, groups, broadcast, listing,
//! and node liveness.
//!
//! [`Cluster`] is the one entry point the management API and sessions use. A connection's
//! owner is derived from its id (the node tag inside it), so an operation on a local
//! connection goes straight to [`ops::apply`] on [`local::Local`] and never touches the
//! backplane; another node runs a request for one of its connections through the same
//! function. Remote operations, broadcasts and listings go through the [`Backplane`]: in
//! memory for one node ([`memory`]), or Redis for many ([`redis`]).
//!
//! It must not import the edges, the management API or the shared state: it reports typed
//! outcomes ([`ops::Outcome`], [`DeliveryError`]) and leaves HTTP statuses to its callers.

pub mod keys;
pub mod local;
pub mod memory;
pub mod ops;
pub mod redis;
pub mod wire;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterSettings;
use crate::connections::{
    Close, ConnHandle, ConnInfo, ConnShared, ConnectionId, NodeTag, SendError,
};
use local::{Fanout, Local};
use ops::{Op, Outcome};

/// Why an operation on a connection did not happen (also carried, typed, in the reply of
/// another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryError {
    /// The connection, or the node that owned it, is gone (410).
    #[error("connection is gone")]
    Gone,
    /// Its outbound queue is full (429).
    #[error("outbound queue is full")]
    Full,
    /// The backplane is unreachable or the owner did not answer in time (503).
    #[error("cluster backplane unavailable")]
    Unavailable,
    /// A message between nodes could not be understood (a bad payload or group name in a
    /// request, or an answer of the wrong kind): versions differ or one has a bug. Never
    /// the API caller's fault.
    #[error("a cluster node could not understand another")]
    Malformed,
}

impl From<SendError> for DeliveryError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Gone => Self::Gone,
            SendError::Full => Self::Full,
        }
    }
}

/// A validated group name: 1–128 bytes of `A-Z a-z 0-9 _ - . : @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Validates a name.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@')
            });
        ok.then(|| Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<String>,
}

/// What the cluster records about a connection (static; `lastActiveAt` is asked of the owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRecord {
    /// The id.
    pub connection_id: String,
    /// Epoch ms of the handshake.
    pub connected_at: i64,
    /// Client address.
    pub source_ip: String,
    /// Client `User-Agent`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Stage.
    pub stage: String,
    /// `Host` of the handshake.
    pub domain_name: String,
    /// The authorizer's principal and context (kept so another node's GET and a reaped
    /// `$disconnect` still carry them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<crate::connections::AuthorizerContext>,
    /// The connection's W3C trace id, hex (so a reaped `$disconnect` joins its trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// A resumable connection's state as its owner sees it now: `connected` or
    /// `suspended` (set in a GET's answer only; `None` for other connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ConnectionRecord {
    /// The record of a live connection.
    pub fn of(shared: &ConnShared) -> Self {
        let info = &shared.info;
        Self {
            connection_id: info.id_text.clone(),
            connected_at: info.connected_at_ms,
            source_ip: info.source_ip.to_string(),
            user_agent: info.user_agent.clone(),
            stage: info.stage.to_string(),
            domain_name: info.domain_name.clone(),
            authorizer: info.authorizer.as_deref().cloned(),
            trace_id: Some(info.trace_id.to_string()),
            status: None,
        }
    }
}

impl ConnectionRecord {
    /// What the gateway knew of the connection (for a `$disconnect` fired on its behalf
    /// after its node died); `None` for a record that does not parse.
    pub fn info(&self) -> Option<ConnInfo> {
        let id = ConnectionId::parse(&self.connection_id)?;
        Some(ConnInfo {
            id,
            id_text: self.connection_id.clone(),
            connected_at_ms: self.connected_at,
            source_ip: self.source_ip.parse().ok()?,
            user_agent: self.user_agent.clone(),
            stage: self.stage.as_str().into(),
            domain_name: self.domain_name.clone(),
            authorizer: self.authorizer.clone().map(Arc::new),
            trace_id: self
                .trace_id
                .as_deref()
                .and_then(crate::connections::TraceId::parse_hex)
                .unwrap_or_else(crate::connections::TraceId::random),
        })
    }
}

/// What a GET returns: the record plus `lastActiveAt` (epoch ms).
pub type Description = (ConnectionRecord, i64);

/// Where a node writes down, cluster-wide, what its connections are and which groups they
/// are in (for listings, and for reaping after the node dies). Writes never wait: they are
/// queued, and a lost one is repaired by a later resync. In memory there is nothing to
/// write down ([`memory::MemoryBackplane`] ignores them).
pub trait Records: Send + Sync {
    /// A new local connection.
    fn connected(&self, shared: &ConnShared);
    /// A local connection closed; it was in `groups`.
    fn disconnected(&self, id: &ConnectionId, groups: &[Arc<str>]);
    /// A local connection joined `group`.
    fn joined(&self, group: &GroupName, id: &ConnectionId);
    /// A local connection left `group`.
    fn left(&self, group: &GroupName, id: &ConnectionId);
}

/// The backplane: one abstraction, two implementations.
#[derive(Debug)]
pub enum Backplane {
    /// One node: nothing is remote.
    Memory(memory::MemoryBackplane),
    /// Several nodes sharing Redis.
    Redis(Arc<redis::RedisBackplane>),
}

/// The cluster as the rest of the gateway sees it.
#[derive(Debug)]
pub struct Cluster {
    /// This node's connections and groups.
    pub local: Arc<Local>,
    /// How other nodes are reached.
    pub backplane: Backplane,
}

/// A connection of a node found dead, handed to the node that reaps it before the dead
/// node is forgotten.
#[derive(Debug)]
pub struct NodeDeath {
    /// The dead node's tag (as Redis keys and a session's owner field write it).
    pub node: String,
    /// The connection, as the dead node recorded it.
    pub record: ConnectionRecord,
    /// Answered `true` when the connection lives on (a resumable session this node adopted,
    /// or another node holds): its group memberships are then kept. Until every answer is
    /// in, the dead node stays listed, so broadcasts to its groups are refused, not lost.
    pub lives_on: tokio::sync::oneshot::Sender<bool>,
}

/// The connections of nodes found dead, one each, for `$disconnect` (the composition root
/// wires it; in memory it ends at once: no other node can die).
pub type NodeDeaths = tokio::sync::mpsc::Receiver<NodeDeath>;

impl Cluster {
    /// Starts this node's cluster: in memory, or on Redis when `cluster.redis_url` or `cluster.redis_cluster_nodes` is set
    /// (connecting lazily, its tasks spawned through `tracker` until `shutdown`).
    pub fn start(
        settings: &ClusterSettings,
        node: NodeTag,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(Self, NodeDeaths), ::redis::RedisError> {
        let local = Arc::new(Local::new(node));
        let (backplane, deaths) = if !settings.uses_redis() {
            let (_, none) = tokio::sync::mpsc::channel(1);
            (Backplane::Memory(memory::MemoryBackplane), none)
        } else {
            let (redis, deaths) =
                redis::RedisBackplane::start(settings, local.clone(), tracker, shutdown)?;
            (Backplane::Redis(redis), deaths)
        };
        Ok((Self { local, backplane }, deaths))
    }

    /// Runs `op` on the node that owns `id`: here through [`ops::apply`], on another node
    /// through the backplane, which runs the same function there. With Redis, a join
    /// answers once the owner is subscribed to the group's channel (on either path).
    pub async fn run(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DeliveryError> {
        match &self.backplane {
            // In memory every connection is local; another node's id is simply gone.
            Backplane::Memory(m) => ops::apply(&self.local, m, id, op),
            Backplane::Redis(r) if self.local.owns(id) => r.apply_or_follow(id, op).await,
            Backplane::Redis(r) => r.request(id, op).await,
        }
    }

    /// Queues a frame for a connection anywhere in the cluster. `Ok` means the owning
    /// node queued it (acknowledged).
    pub async fn post(&self, id: &ConnectionId, message: Message) -> Result<(), DeliveryError> {
        self.run(id, Op::Post(message)).await.map(drop)
    }

    /// Describes a connection anywhere in the cluster.
    pub async fn describe(&self, id: &ConnectionId) -> Result<Description, DeliveryError> {
        self.run(id, Op::Get).await?.into_description()
    }

    /// Closes a connection anywhere in the cluster.
    pub async fn close(&self, id: &ConnectionId, close: Close) -> Result<(), DeliveryError> {
        self.run(id, Op::Delete(close)).await.map(drop)
    }

    /// Adds a connection anywhere in the cluster to a group.
    pub async fn join(&self, group: &GroupName, id: &ConnectionId) -> Result<(), DeliveryError> {
        self.run(id, Op::Join(group.clone())).await.map(drop)
    }

    /// Removes a connection anywhere in the cluster from a group.
    pub async fn leave(&self, group: &GroupName, id: &ConnectionId) -> Result<(), DeliveryError> {
        self.run(id, Op::Leave(group.clone())).await.map(drop)
    }

    /// Joins and leaves the groups named in an integration answer; an invalid name is
    /// logged and skipped, and a failure affects only that group.
    pub async fn change_groups(&self, id: &ConnectionId, join: &[String], leave: &[String]) {
        for (names, joining) in [(join, true), (leave, false)] {
            for name in names {
                let Some(group) = GroupName::parse(name) else {
                    tracing::warn!(group = %name, "integration named an invalid group; ignored");
                    continue;
                };
                let result = if joining {
                    self.join(&group, id).await
                } else {
                    self.leave(&group, id).await
                };
                if let Err(error) = result {
                    tracing::debug!(group = %name, %error, "group change from an integration answer failed");
                }
            }
        }
    }

    /// Sends a frame to every member of `group` (or every connection) on every node.
    /// Encoded once and published once: on the group's channel, which only the nodes
    /// holding a member listen on, or on the broadcast channel, which every node does.
    /// Never waits on a slow member. Returns the fan-out when it happened here and now (one
    /// node, in memory); with Redis every interested node delivers on its own when the
    /// publish reaches it.
    pub async fn broadcast(
        &self,
        group: Option<&GroupName>,
        message: Message,
    ) -> Result<Option<Fanout>, DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Ok(Some(
                self.local.broadcast(group.map(GroupName::as_str), &message),
            )),
            // Every interested node, this one included, delivers what arrives on its
            // channels, so all members see broadcasts in the one order Redis gives them.
            Backplane::Redis(r) => {
                r.publish_broadcast(group, &message).await?;
                Ok(None)
            }
        }
    }

    /// Lists connections on every node, a page at a time.
    pub async fn list_connections(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConnectionRecord>, DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Ok(self.local.list_connections(cursor, limit)),
            Backplane::Redis(r) => r.list_connections(cursor, limit).await,
        }
    }

    /// Lists a group's members on every node, a page at a time.
    pub async fn list_members(
        &self,
        group: &GroupName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>, DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Ok(self.local.list_members(group, cursor, limit)),
            Backplane::Redis(r) => r.list_members(group, cursor, limit).await,
        }
    }

    /// Registers a new local connection, and records it cluster-wide (in the background;
    /// never waits for Redis). Mirror: [`Cluster::disconnected`].
    pub fn connected(&self, shared: &Arc<ConnShared>) {
        self.local.registry.insert(ConnHandle::new(shared.clone()));
        self.records().connected(shared);
    }

    /// Forgets a closed local connection and its memberships (a group it leaves without
    /// a local member is unsubscribed, in the background).
    pub fn disconnected(&self, shared: &ConnShared) {
        self.local.registry.remove(&shared.info.id);
        self.local.forget_adopted(&shared.info.id);
        let groups = self.local.leave_all(shared);
        self.records().disconnected(&shared.info.id, &groups);
        if let Backplane::Redis(r) = &self.backplane {
            r.groups_left(&groups);
        }
    }

    /// Where resumable sessions' frames are also kept (cluster mode: Redis), so another
    /// node can resume them after this one died; `None` in memory (one node: nowhere
    /// else).
    pub fn resume_mirror(&self) -> Option<Arc<dyn crate::connections::resume::Mirror>> {
        match &self.backplane {
            Backplane::Memory(_) => None,
            Backplane::Redis(r) => Some(r.session_mirror()),
        }
    }

    /// Records a new resumable session's secret and state where its frames are kept
    /// (cluster mode), with the TTL and history length its keys get.
    pub fn session_opened(&self, shared: &ConnShared, ttl_ms: u64, max_len: usize) {
        if let Backplane::Redis(r) = &self.backplane {
            r.session_opened(shared, ttl_ms, max_len);
        }
    }

    /// The TTL and history length resumable sessions' keys get in Redis from now on
    /// (cluster mode), for sessions this node takes on from others.
    pub fn size_sessions(&self, ttl_ms: u64, max_len: usize) {
        if let Backplane::Redis(r) = &self.backplane {
            r.size_sessions(ttl_ms, max_len);
        }
    }

    /// A resumable session of another node as Redis kept it, with its frames after
    /// `after` (cluster mode; `None` in memory or when Redis keeps no such session).
    pub async fn kept_session(
        &self,
        id: &ConnectionId,
        after: u64,
    ) -> Result<Option<redis::KeptSession>, DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Ok(None),
            Backplane::Redis(r) => r.kept_session(id, after).await,
        }
    }

    /// Takes over a resumable session whose holder, the node tagged `from`, died: it lives
    /// here from now on (registry, records, Redis's owner field) — unless another node took
    /// it over first ("gone"). Mirror: [`Cluster::disconnected`].
    pub async fn adopt(&self, shared: &Arc<ConnShared>, from: &str) -> Result<(), DeliveryError> {
        let Backplane::Redis(r) = &self.backplane else {
            return Err(DeliveryError::Gone);
        };
        // Requests that find it named here before it is registered wait ("unavailable").
        let id = shared.info.id;
        if !self.local.begin_transit(id) {
            return Err(DeliveryError::Unavailable); // another move or takeover of it here
        }
        let taken = r.session_taken_over(&id, from).await;
        if taken.is_ok() {
            self.local.adopt(id);
            self.connected(shared);
        }
        self.local.end_transit(id);
        taken
    }

    /// Moves resumable session `shared` (arriving: built here with its groups, no offsets
    /// yet) from the live node tagged `holder`, whose client presented `secret` here: once
    /// `Ok`, it lives here (registry, records, Redis's owner field), and Redis keeps its
    /// frames and the offset its next frame gets ([`Cluster::kept_session`]); it stays in
    /// transit (operations on it wait) until the caller has numbered it and calls
    /// `local.end_transit(id)`. "Gone" when the holder does not have it (or not
    /// with that secret).
    pub async fn receive_session(
        &self,
        shared: &Arc<ConnShared>,
        holder: &str,
        secret: &str,
    ) -> Result<(), DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Err(DeliveryError::Gone),
            Backplane::Redis(r) => r.receive_session(shared, holder, secret).await,
        }
    }

    /// Who holds resumable session `id` according to Redis (its node's tag), if Redis
    /// keeps it (`None` in memory).
    pub async fn session_owner(&self, id: &ConnectionId) -> Result<Option<String>, DeliveryError> {
        match &self.backplane {
            Backplane::Memory(_) => Ok(None),
            Backplane::Redis(r) => r.session_owner(id).await,
        }
    }

    /// Forgets what Redis keeps of resumable session `id`.
    pub async fn forget_session(&self, id: &ConnectionId) {
        if let Backplane::Redis(r) = &self.backplane {
            r.forget_session(id).await;
        }
    }

    /// Whether the backplane is usable (always true in memory).
    pub fn is_connected(&self) -> bool {
        match &self.backplane {
            Backplane::Memory(_) => true,
            Backplane::Redis(r) => r.is_connected(),
        }
    }

    /// Where this node's record writes go.
    fn records(&self) -> &dyn Records {
        match &self.backplane {
            Backplane::Memory(m) => m,
            Backplane::Redis(r) => r.records(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in ["room", "room-1", "a.b:c@d_e", &"x".repeat(128)] {
            assert!(GroupName::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "a\tb", "é", &"x".repeat(129)] {
            assert!(GroupName::parse(bad).is_none(), "{bad}");
        }
    }
}
