//! [`InProcess`]: the gateway inside the test process. `switchboard::app::run` serves
//! listeners bound here on 127.0.0.1:0, in the test's own runtime, so a
//! `#[tokio::test(start_paused = true)]` test runs the gateway's timers (idle timeout,
//! maximum lifetime, server pings, integration timeouts) on paused time: whenever every
//! task waits, tokio moves the clock to the next timer instead of sleeping. Measure time
//! with `tokio::time::Instant` in such a test; `std::time::Instant` keeps real time.
//!
//! Sockets stay real (loopback TCP, real WebSocket and HTTP clients and backends). There is
//! no process, so no logs, signals or exit code: tests of those use [`super::Gateway`].

use std::ops::Deref;

use switchboard::app::{self, Listeners};
use switchboard::config::{self, ConfigSource};
use switchboard::lifecycle::Control;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Endpoints;

/// A gateway running as a task of the test's runtime; stopped when dropped.
pub struct InProcess {
    /// Where it listens.
    endpoints: Endpoints,
    /// Cancelled on drop: `app::run` drains and returns, as after SIGTERM.
    stop: CancellationToken,
    /// `app::run` itself (aborted on drop, should draining take long).
    task: JoinHandle<anyhow::Result<()>>,
    /// Kept so the gateway's reload channel stays open.
    _reload: mpsc::Sender<()>,
}

impl InProcess {
    /// Loads `config` (TOML, no environment overrides), binds both listeners on
    /// 127.0.0.1:0 and spawns `app::run` on the current runtime.
    pub async fn start(config: &str) -> InProcess {
        let settings = load(config).unwrap_or_else(|e| panic!("invalid test config: {e}"));
        let listeners = Listeners {
            client: TcpListener::bind("127.0.0.1:0").await.expect("bind client"),
            management: TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind management"),
        };
        let endpoints = Endpoints::new(
            listeners.client.local_addr().unwrap(),
            listeners.management.local_addr().unwrap(),
        );
        let stop = CancellationToken::new();
        let text = config.to_owned();
        let (control, reload) = Control::new(stop.clone(), Box::new(move || load(&text)));
        let task = tokio::spawn(async move { app::run(listeners, &settings, control).await });
        InProcess {
            endpoints,
            stop,
            task,
            _reload: reload,
        }
    }
}

/// The settings of `config`, as the binary would load them without an environment.
fn load(config: &str) -> Result<config::Settings, config::ConfigError> {
    config::load(ConfigSource::Text(config), std::iter::empty())
}

impl Deref for InProcess {
    type Target = Endpoints;

    fn deref(&self) -> &Endpoints {
        &self.endpoints
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}
