//! The composition root: builds the shared state ([`crate::state`]), wires its hooks,
//! serves both listeners until the node stops, and shuts down (see [`crate::lifecycle`]
//! for draining and reloading).
//!
//! Hooks wired here, so that no lower layer reaches up: a dead node's connections (found
//! by the cluster) → `$disconnect` ([`AppState::node_died_with`]: at once, or for a
//! resumable session at the end of its window unless another node took it over).
//!
//! One shutdown tree: `run` owns the root [`CancellationToken`] that background tasks
//! watch, and on shutdown asks every connection to close (1001); connections and
//! background tasks (the backplane's, the config watcher, TLS handshakes, `$disconnect`
//! calls) are spawned through the one [`TaskTracker`], so `run` waits for all of them
//! within the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cluster::{Backplane, Cluster, NodeDeaths};
use crate::config::{ConfigError, Settings};
use crate::connections::{Close, NodeTag};
use crate::lifecycle::{self, Control, StopReason};
use crate::state::AppState;
use crate::telemetry::metrics;
use crate::{edge, management};

/// Builds the state of a node: its cluster (started, tasks tracked) and everything else
/// from `settings`, with the cluster's hooks wired.
pub fn build(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Arc<AppState>, ConfigError> {
    let tracker = TaskTracker::new();
    let (cluster, node_deaths) = Cluster::start(
        &settings.cluster,
        NodeTag::random(),
        &tracker,
        shutdown.clone(),
    )
    .map_err(|e| {
        let key = if settings.cluster.redis_cluster_nodes.is_empty() {
            "cluster.redis_url"
        } else {
            "cluster.redis_cluster_nodes"
        };
        ConfigError::invalid(key, e.to_string())
    })?;
    let state = Arc::new(AppState::new(settings, cluster, tracker, shutdown)?);
    wire_node_deaths(&state, node_deaths);
    Ok(state)
}

/// A dead node's connections get `$disconnect` from this survivor.
fn wire_node_deaths(state: &Arc<AppState>, mut deaths: NodeDeaths) {
    let hook = state.clone();
    state.tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = hook.shutdown.cancelled() => return,
                record = deaths.recv() => match record {
                    Some(death) => hook.node_died_with(death),
                    None => return,
                },
            }
        }
    });
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
    let state = build(settings, shutdown.clone())?;
    metrics::draining(false);
    for (name, listener) in [
        ("client", &listeners.client),
        ("management", &listeners.management),
    ] {
        info!(listener = name, addr = %listener.local_addr()?, "listening");
    }
    // `client.callbacks`: `@connections` on the client listener, answered by the
    // management API's own router (its authentication, throttles and errors).
    let callbacks = settings
        .client
        .callbacks
        .then(|| management::router(state.clone()));
    let client = tokio::spawn(edge::serve(listeners.client, state.clone(), callbacks));
    let management = tokio::spawn(management::serve(listeners.management, state.clone()));
    let (watch_tx, mut watched) = tokio::sync::mpsc::channel(1);
    if let Some(path) = control
        .watch
        .take()
        .filter(|_| settings.server.watch_config)
    {
        state
            .tracker
            .spawn(lifecycle::watch(path, watch_tx, shutdown.clone()));
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
    state.cluster.local.registry.close_all(&Close::going_away());
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
