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
use crate::config::{ConfigError, ManagementSettings, Settings};
use crate::connections::{NodeTag, Registry};
use crate::integrations::http::{HttpClient, build_client};
use crate::{edge, management};

/// Everything connections and management calls share.
#[derive(Debug)]
pub struct AppState {
    /// The API: routes, integrations, limits.
    pub api: Arc<Api>,
    /// Connections held by this node.
    pub registry: Registry,
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
    /// Builds the state from validated settings.
    pub fn new(settings: &Settings, shutdown: CancellationToken) -> Result<Self, ConfigError> {
        let http = build_client();
        let api = Api::build(settings, &http)?;
        Ok(Self {
            api: Arc::new(api),
            registry: Registry::default(),
            node: NodeTag::random(),
            management: settings.management.clone(),
            tracker: TaskTracker::new(),
            shutdown,
            http,
        })
    }
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
        connections = state.registry.len(),
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
    management.abort();
    Ok(())
}
