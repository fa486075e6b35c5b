//! The application: shared state, and `run`, which serves both listeners until shutdown.
//!
//! One shutdown tree: the root [`CancellationToken`] given to `run` is cancelled on
//! SIGTERM/SIGINT; every connection and background task gets a child token and is spawned
//! through the one [`TaskTracker`], so `run` can wait for all of them within the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::Api;
use crate::cluster::local::Local;
use crate::cluster::memory::MemoryBackplane;
use crate::cluster::redis::RedisBackplane;
use crate::cluster::{Backplane, Cluster, ConnectionRecord};
use crate::config::{ConfigError, ManagementSettings, Settings};
use crate::connections::{ConnInfo, ConnShared, ConnectionId, NodeTag};
use crate::edge::close::Close;
use crate::integrations::http::{HttpClient, build_client};
use crate::{edge, management};

/// Everything connections and management calls share.
#[derive(Debug)]
pub struct AppState {
    /// The API: routes, integrations, limits.
    pub api: Arc<Api>,
    /// Connections, groups and the backplane to other nodes.
    pub cluster: Cluster,
    /// This node's tag, embedded in every connection id it mints.
    pub node: NodeTag,
    /// Management listener settings (auth tokens).
    pub management: ManagementSettings,
    /// Spawns and tracks every connection and background task.
    pub tracker: TaskTracker,
    /// Cancelled when the node shuts down; sessions hold child tokens.
    pub shutdown: CancellationToken,
    /// The shared HTTP client (kept for building integrations on reload).
    pub http: HttpClient,
}

impl AppState {
    /// Builds the state from validated settings and starts the backplane's tasks.
    pub fn new(settings: &Settings, shutdown: CancellationToken) -> Result<Self, ConfigError> {
        let http = build_client();
        let api = Arc::new(Api::build(settings, &http)?);
        let node = NodeTag::random();
        let local = Arc::new(Local::new(node));
        let tracker = TaskTracker::new();
        let backplane = if settings.cluster.redis_url.expose().is_empty() {
            Backplane::Memory(MemoryBackplane)
        } else {
            let hook_api = api.clone();
            let hook_tracker = tracker.clone();
            let on_node_death = Arc::new(move |record: ConnectionRecord| {
                if let Some(shared) = shared_from_record(&record) {
                    edge::session::fire_disconnect(
                        &hook_tracker,
                        &hook_api,
                        Arc::new(shared),
                        Close::abnormal("abnormal closure"),
                    );
                }
            });
            let redis = RedisBackplane::start(
                &settings.cluster,
                local.clone(),
                on_node_death,
                shutdown.clone(),
            )
            .map_err(|e| ConfigError::invalid("cluster.redis_url", e.to_string()))?;
            Backplane::Redis(redis)
        };
        Ok(Self {
            api,
            cluster: Cluster { local, backplane },
            node,
            management: settings.management.clone(),
            tracker,
            shutdown,
            http,
        })
    }
}

/// Rebuilds what `$disconnect` needs from a dead node's connection record.
fn shared_from_record(record: &ConnectionRecord) -> Option<ConnShared> {
    let id = ConnectionId::parse(&record.connection_id)?;
    let info = ConnInfo {
        id,
        id_text: record.connection_id.clone(),
        connected_at_ms: record.connected_at,
        source_ip: record.source_ip.parse().ok()?,
        user_agent: record.user_agent.clone(),
        stage: record.stage.as_str().into(),
        domain_name: record.domain_name.clone(),
    };
    Some(ConnShared::new(info, CancellationToken::new(), 0))
}

/// The two bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket clients.
    pub client: TcpListener,
    /// The management API.
    pub management: TcpListener,
}

/// Serves both listeners until `shutdown` is cancelled, then closes every session with
/// 1001, runs their `$disconnect`, and waits up to the grace period for all of it.
pub async fn run(
    listeners: Listeners,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = Arc::new(AppState::new(settings, shutdown.clone())?);
    for (name, listener) in [
        ("client", &listeners.client),
        ("management", &listeners.management),
    ] {
        info!(listener = name, addr = %listener.local_addr()?, "listening");
    }
    let client = tokio::spawn(edge::serve(listeners.client, state.clone()));
    let management = tokio::spawn(management::serve(listeners.management, state.clone()));

    shutdown.cancelled().await;
    info!(
        connections = state.cluster.local.registry.len(),
        "shutting down: closing connections"
    );
    let _ = client.await;
    state.tracker.close();
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, state.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            remaining_tasks = state.tracker.len(),
            "shutdown grace period over; exiting with tasks unfinished"
        );
    } else {
        info!("all connections closed");
    }
    if let Backplane::Redis(redis) = &state.cluster.backplane {
        redis.deregister().await;
    }
    management.abort();
    Ok(())
}
