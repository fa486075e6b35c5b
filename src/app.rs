//! The application: shared state, and `run`, which serves both listeners until the node
//! stops (see [`crate::lifecycle`] for draining and reloading).
//!
//! One shutdown: `run` owns a root [`CancellationToken`] that background tasks watch, and
//! on shutdown asks every connection to close (1001); connections and background tasks
//! are spawned through the one [`TaskTracker`], so `run` can wait for all of them within
//! the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::Api;
use crate::cluster::local::Local;
use crate::cluster::memory::MemoryBackplane;
use crate::cluster::redis::RedisBackplane;
use crate::cluster::{Backplane, Cluster, ConnectionRecord};
use crate::config::{ConfigError, Settings};
use crate::connections::{CloseRequest, ConnInfo, ConnShared, ConnectionId, NodeTag};
use crate::edge::close::Close;
use crate::integrations::http::{HttpClient, build_client};
use crate::lifecycle::{self, Control, StopReason};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics;
use crate::{edge, management};

/// Everything connections and management calls share.
#[derive(Debug)]
pub struct AppState {
    /// The API: routes, integrations, limits. Swapped whole by a reload; a session loads
    /// it per message, so the next message sees new routes without reconnecting.
    api: Arc<ArcSwap<Api>>,
    /// Connections, groups and the backplane to other nodes.
    pub cluster: Cluster,
    /// This node's tag, embedded in every connection id it mints.
    pub node: NodeTag,
    /// The running settings (management credentials are read from here per call). Swapped
    /// whole by a reload.
    settings: ArcSwap<Settings>,
    /// Set when the node drains: readiness fails.
    pub draining: AtomicBool,
    /// Cancelled by `POST /admin/drain`.
    pub drain_requested: CancellationToken,
    /// Cancelled to stop the accept loop (draining).
    pub stop_accepting: CancellationToken,
    /// Throttles and node-wide caps from `[limits]` (read at startup; a reload keeps them).
    pub limits: Arc<crate::throttle::Limits>,
    /// The access log, when enabled (fixed at startup).
    pub access_log: Option<AccessLog>,
    /// Spawns and tracks every connection and background task.
    pub tracker: TaskTracker,
    /// Cancelled when the node shuts down; sessions hold child tokens.
    pub shutdown: CancellationToken,
    /// The shared HTTP client (kept for building integrations on reload).
    pub http: HttpClient,
    /// TLS acceptors of both listeners (`None`: plain TCP); read at startup only.
    pub tls: crate::tls::Acceptors,
}

impl AppState {
    /// Builds the state from validated settings and starts the backplane's tasks.
    pub fn new(settings: &Settings, shutdown: CancellationToken) -> Result<Self, ConfigError> {
        let http = build_client();
        let api = Arc::new(ArcSwap::from_pointee(Api::build(settings, &http)?));
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
                        &hook_api.load_full(),
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
            settings: ArcSwap::from_pointee(settings.clone()),
            access_log: AccessLog::start(&settings.access_log)?,
            tls: crate::tls::Acceptors::build(settings)?,
            draining: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            stop_accepting: CancellationToken::new(),
            limits: Arc::new(crate::throttle::Limits::new(&settings.limits)),
            tracker,
            shutdown,
            http,
        })
    }
}

impl AppState {
    /// The current API.
    pub fn api(&self) -> Arc<Api> {
        self.api.load_full()
    }

    /// Replaces the API (hot reload).
    pub fn set_api(&self, api: Arc<Api>) {
        self.api.store(api);
    }

    /// The running settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the running settings (hot reload).
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Ready for new clients: not draining, and the backplane (if any) is connected.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Err("draining")
        } else if !self.cluster.is_connected() {
            Err("backplane unavailable")
        } else {
            Ok(())
        }
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
        authorizer: record.authorizer.clone().map(Arc::new),
    };
    Some(ConnShared::new(info, 0, 0))
}

/// The two bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// WebSocket clients.
    pub client: TcpListener,
    /// The management API.
    pub management: TcpListener,
}

/// Serves both listeners until a stop (signal or `/admin/drain`), reloading on request;
/// then drains, waits up to the grace period for sessions and `$disconnect` calls, and
/// deregisters from the backplane.
pub async fn run(
    listeners: Listeners,
    settings: &Settings,
    mut control: Control,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // Before the API is built: routes register their metric handles with the recorder.
    metrics::install(&settings.api.id);
    let state = Arc::new(AppState::new(settings, shutdown.clone())?);
    metrics::draining(false);
    for (name, listener) in [
        ("client", &listeners.client),
        ("management", &listeners.management),
    ] {
        info!(listener = name, addr = %listener.local_addr()?, "listening");
    }
    let client = tokio::spawn(edge::serve(listeners.client, state.clone()));
    let management = tokio::spawn(management::serve(listeners.management, state.clone()));
    let (watch_tx, mut watched) = tokio::sync::mpsc::channel(1);
    if let Some(path) = control
        .watch
        .take()
        .filter(|_| settings.server.watch_config)
    {
        tokio::spawn(lifecycle::watch(path, watch_tx, shutdown.clone()));
    }

    let reason = loop {
        tokio::select! {
            _ = control.stop.cancelled() => break StopReason::Signal,
            _ = state.drain_requested.cancelled() => break StopReason::AdminDrain,
            Some(()) = control.reload.recv() => lifecycle::reload(&state, &control.load),
            Some(()) = watched.recv() => lifecycle::reload(&state, &control.load),
        }
    };
    let period = Duration::from_secs(state.settings().server.drain_period_secs);
    lifecycle::drain(&state, reason, period).await;
    shutdown.cancel();
    state
        .cluster
        .local
        .registry
        .close_all(&CloseRequest::going_away());
    let _ = client.await;
    state.tracker.close();
    let grace = Duration::from_secs(state.settings().server.shutdown_grace_secs);
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
