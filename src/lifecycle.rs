//! Lifecycle of a running node: draining before exit, and reloading the configuration
//! without dropping a connection.
//!
//! **Draining** (SIGTERM/SIGINT, or `POST /admin/drain`): readiness fails at once, the client
//! listener stops accepting, and connections are closed gradually over
//! `server.drain_period_secs` with 1012 (service restart) so clients reconnect elsewhere.
//! With a period of 0 they all close at once — with 1001 (going away) on a signal, 1012 on
//! `/admin/drain`. Each close runs `$disconnect`; the process exits when no connection is
//! left, or at the deadline.
//!
//! **Reloading** (SIGHUP, or a changed file when `server.watch_config` is on): the file is
//! loaded and validated again; routes, integrations, limits and management credentials are
//! swapped in whole for the next message or call. An invalid file is refused with the bad
//! key named and the running configuration kept. Listener addresses, `[cluster]`, `[log]`,
//! `[http_client]` and the throttles of `[limits]` need a restart (a reload that changes
//! them says so).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::Api;
use crate::config::{ConfigError, Settings};
use crate::connections::Close;
use crate::state::AppState;
use crate::telemetry::metrics;

/// Loads the configuration again (same file, same environment).
pub type Loader = Box<dyn Fn() -> Result<Settings, ConfigError> + Send + Sync>;

/// How the process steers a running gateway.
pub struct Control {
    /// Cancelled on SIGTERM/SIGINT: drain, then exit.
    pub stop: CancellationToken,
    /// One message per SIGHUP: reload.
    pub reload: mpsc::Receiver<()>,
    /// How to load the configuration again.
    pub load: Loader,
    /// The file to watch for changes (when `server.watch_config` is on).
    pub watch: Option<PathBuf>,
}

impl Control {
    /// A control with no reload source (tests, embedded runs).
    pub fn new(stop: CancellationToken, load: Loader) -> (Self, mpsc::Sender<()>) {
        let (tx, reload) = mpsc::channel(4);
        (
            Self {
                stop,
                reload,
                load,
                watch: None,
            },
            tx,
        )
    }
}

/// Why the node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM or SIGINT.
    Signal,
    /// `POST /admin/drain`.
    AdminDrain,
}

/// Closes every connection, gradually over `period`, and returns when none is left or at
/// the end of the period (every connection has then been asked to close).
pub async fn drain(state: &AppState, reason: StopReason, period: Duration) {
    state.set_draining();
    state.stop_accepting.cancel();
    let (code, text) = match (reason, period.is_zero()) {
        (StopReason::Signal, true) => (1001, "Going away"),
        _ => (1012, "Service restart"),
    };
    let handles = state.cluster.local.registry.handles();
    info!(
        connections = handles.len(),
        period_ms = period.as_millis() as u64,
        code,
        "draining"
    );
    let tick = Duration::from_millis(100);
    let ticks = (period.as_millis() / tick.as_millis()).max(1) as usize;
    let per_tick = handles.len().div_ceil(ticks).max(1);
    let mut remaining = handles.as_slice();
    while !remaining.is_empty() {
        let (now, later) = remaining.split_at(per_tick.min(remaining.len()));
        for handle in now {
            handle.shared.request_close(Close::new(code, text));
        }
        remaining = later;
        if !remaining.is_empty() {
            tokio::time::sleep(tick).await;
        }
    }
    // Let the last sessions finish their close handshake (bounded by the period).
    let deadline = tokio::time::Instant::now()
        + period.min(Duration::from_secs(5))
        + Duration::from_millis(100);
    while !state.cluster.local.registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads the configuration again and swaps it in, or keeps the running one.
pub fn reload(state: &AppState, load: &Loader) {
    let settings = match load() {
        Ok(settings) => settings,
        Err(e) => return refuse(e),
    };
    let api = match Api::build(&settings, &state.http) {
        Ok(api) => api,
        Err(e) => return refuse(e),
    };
    let running = state.settings();
    let restart_needed: Vec<&str> = [
        (
            "client.listen",
            running.client.listen != settings.client.listen,
        ),
        (
            "management.listen",
            running.management.listen != settings.management.listen,
        ),
        ("cluster", running.cluster != settings.cluster),
        ("log", running.log != settings.log),
        ("limits", running.limits != settings.limits),
        ("http_client", running.http_client != settings.http_client),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    if !restart_needed.is_empty() {
        warn!(keys = ?restart_needed, "these settings changed but take effect only after a restart");
    }
    state.set_api(Arc::new(api));
    state.set_settings(settings);
    metrics::reload("ok");
    info!(routes = state.api().routes.len(), "configuration reloaded");
}

fn refuse(e: ConfigError) {
    metrics::reload("error");
    error!(error = %e, "configuration reload refused; keeping the running configuration");
}

/// Watches `path`'s modification time and sends a reload when it changes.
pub async fn watch(path: PathBuf, reload: mpsc::Sender<()>, stop: CancellationToken) {
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Option<SystemTime> = modified(&path);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = modified(&path);
        if now != last {
            last = now;
            let _ = reload.try_send(());
        }
    }
}
