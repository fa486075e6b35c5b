//! The shared state of a running node: the API, the cluster, settings, throttles, the
//! access log and the shutdown tree, in one [`AppState`] that the edges (`edge`,
//! `management`) and `lifecycle` use. It sits below them and imports none of them; the
//! composition root (`app`) builds it and wires its hooks.
//!
//! [`connection`] is the connection-lifecycle seam: every side effect of a connection's
//! open and close hangs off one register/close pair there; [`resume`] suspends a resumable
//! connection instead of closing it when its socket drops.

pub mod connection;
pub mod resume;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::cluster::Cluster;
use crate::config::{ConfigError, Settings};
use crate::connections::NodeTag;
use crate::integrations::http::{HttpClient, build_client};
use crate::telemetry::access_log::AccessLog;

/// Most `$disconnect` integration calls in flight at once (the rest wait their turn).
pub const DISCONNECT_CALLS: usize = 32;

/// Most resumable sessions of dead nodes being adopted at once (the rest wait their turn).
pub const ADOPTIONS: usize = 64;

/// Everything connections and management calls share.
#[derive(Debug)]
pub struct AppState {
    /// The API: routes, integrations, limits. Swapped whole by a reload; a session loads
    /// it per message, so the next message sees new routes without reconnecting.
    api: ArcSwap<Api>,
    /// Connections, groups and the backplane to other nodes.
    pub cluster: Cluster,
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
    /// Permits for `$disconnect` calls in flight ([`DISCONNECT_CALLS`]): a mass close
    /// queues its calls here (one small task each) instead of sending them all at once.
    disconnect_calls: Arc<tokio::sync::Semaphore>,
    /// Permits for adoptions of dead nodes' sessions in flight ([`ADOPTIONS`]).
    adoptions: Arc<tokio::sync::Semaphore>,
    /// Resumable sessions suspended now (`resume.max_suspended` bounds it; see [`resume`]).
    suspended: AtomicUsize,
    /// Cancelled when the node shuts down; sessions hold child tokens.
    pub shutdown: CancellationToken,
    /// The shared HTTP client (kept for building integrations on reload).
    pub http: HttpClient,
    /// TLS acceptors of both listeners (`None`: plain TCP); read at startup only.
    pub tls: crate::tls::Acceptors,
}

impl AppState {
    /// Builds the state from validated settings around a started cluster; connections and
    /// background tasks are spawned through `tracker` and stop on `shutdown`.
    pub fn new(
        settings: &Settings,
        cluster: Cluster,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, ConfigError> {
        let http = build_client(&settings.http_client);
        Ok(Self {
            api: ArcSwap::from_pointee(Api::build(settings, &http)?),
            cluster,
            settings: ArcSwap::from_pointee(settings.clone()),
            access_log: AccessLog::start(&settings.access_log)?,
            tls: crate::tls::Acceptors::build(settings)?,
            draining: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            stop_accepting: CancellationToken::new(),
            limits: Arc::new(crate::throttle::Limits::new(&settings.limits)),
            tracker,
            disconnect_calls: Arc::new(tokio::sync::Semaphore::new(DISCONNECT_CALLS)),
            adoptions: Arc::new(tokio::sync::Semaphore::new(ADOPTIONS)),
            suspended: AtomicUsize::new(0),
            shutdown,
            http,
        })
    }

    /// This node's tag, embedded in every connection id it mints.
    pub fn node(&self) -> NodeTag {
        self.cluster.local.node
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

    /// Marks the node as draining: readiness fails from now on (idempotent).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        crate::telemetry::metrics::draining(true);
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
