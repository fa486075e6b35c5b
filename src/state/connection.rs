//! The connection-lifecycle seam: a connection's open and its close, each in one place.
//!
//! [`AppState::open_connection`] and [`AppState::close_connection`] mirror each other, and
//! every side effect of a connection's life hangs off that pair, in this order:
//!
//! | open | close |
//! |---|---|
//! | registry insert + cluster record ([`Cluster::connected`]) | registry remove, memberships left, records removed ([`Cluster::disconnected`]) |
//! | `connections` gauge up | `connections` gauge down, closes by code |
//! | CONNECT access-log line (101) | DISCONNECT access-log line |
//! | | `$disconnect` integration |
//!
//! A resumable connection whose socket drops is suspended rather than closed
//! ([`super::resume`]): its close half runs when its window passes without a resume.
//!
//! A connection of a node found dead ([`AppState::connection_lost`]) gets the close half
//! that belongs to the cluster as a whole: the DISCONNECT line and `$disconnect`; its
//! registry and records were its node's. A feature that must see every open and close
//! (presence, history, resumable sessions) is one addition here.
//!
//! [`Cluster::connected`]: crate::cluster::Cluster::connected
//! [`Cluster::disconnected`]: crate::cluster::Cluster::disconnected

use std::sync::Arc;

use tracing::{Instrument as _, info, warn};

use super::AppState;
use crate::api::Api;
use crate::cluster::ConnectionRecord;
use crate::connections::id::request_id;
use crate::connections::resume::Resumable;
use crate::connections::{Close, ConnInfo, ConnShared};
use crate::integrations::event::Event;
use crate::telemetry::access_log::AccessRecord;
use crate::telemetry::metrics;

/// What the handshake knows of an accepted connection's `$connect`, for its access-log line.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// `requestContext.requestId` of the CONNECT event.
    pub request_id: &'a str,
    /// How long `$connect` took, when there is one.
    pub connect_latency_ms: Option<f64>,
}

impl AppState {
    /// Opens an accepted connection: registers it (so a POST made as soon as the client
    /// sees the 101 is queued), records it cluster-wide, counts it and logs it. A
    /// `resumable` one (`switchboard.resume.v1`) gets a token and a history. Mirror:
    /// [`AppState::close_connection`].
    pub fn open_connection(
        &self,
        api: &Api,
        info: ConnInfo,
        accepted: Accepted<'_>,
        resumable: bool,
    ) -> Arc<ConnShared> {
        let queue = (
            api.client.outbound_queue_messages,
            api.client.outbound_queue_bytes,
        );
        let shared = Arc::new(if resumable {
            let mut resume = Resumable::new(api.resume.max_messages, api.resume.max_bytes);
            if let Some(mirror) = self.cluster.resume_mirror() {
                resume = resume.mirrored(info.id, mirror);
            }
            ConnShared::resumable(info, queue, resume)
        } else {
            ConnShared::new(info, queue.0, queue.1)
        });
        if resumable {
            let ttl_secs = api.resume.window_secs + api.client.max_lifetime_secs;
            let ttl_ms = ttl_secs.saturating_mul(1000);
            self.cluster
                .session_opened(&shared, ttl_ms, api.resume.max_messages);
        }
        self.cluster.connected(&shared);
        if self.shutdown.is_cancelled() {
            // Shutdown began after this handshake did; it closes the connections it found
            // in the registry, and this one may have been inserted after it looked.
            shared.request_close(Close::going_away());
        }
        metrics::connection_opened();
        if let Some(log) = &self.access_log {
            let event = Event::connect(&shared.info, &api.id, accepted.request_id, &[], &[]);
            log.log(&AccessRecord {
                status: Some(101),
                integration_latency_ms: accepted.connect_latency_ms,
                ..AccessRecord::of(&event)
            });
        }
        shared
    }

    /// Closes a connection whose session has ended (its socket is gone): refuses further
    /// frames, deregisters it and its memberships, counts and logs the close, and runs
    /// `$disconnect` in the background.
    pub fn close_connection(&self, shared: &Arc<ConnShared>, close: Close) {
        shared.outbox.close();
        if let Some(resume) = &shared.resume {
            resume.end();
        }
        self.cluster.disconnected(shared);
        metrics::connection_closed(close.code);
        info!(code = close.code, reason = %close.reason, "disconnected");
        self.disconnected(shared.clone(), close);
    }

    /// A connection of a node found dead: `$disconnect` with 1006, fired by this survivor.
    pub fn connection_lost(&self, record: &ConnectionRecord) {
        if let Some(info) = record.info() {
            let shared = Arc::new(ConnShared::new(info, 0, 0));
            self.disconnected(shared, Close::abnormal("abnormal closure"));
        }
    }

    /// The DISCONNECT line and the `$disconnect` call (best effort, in the background;
    /// tracked, so shutdown waits for it; at most [`super::DISCONNECT_CALLS`] at once).
    fn disconnected(&self, shared: Arc<ConnShared>, close: Close) {
        let api = self.api();
        let request_id = request_id();
        if let Some(log) = &self.access_log {
            let event = Event::disconnect(&shared.info, &api.id, &request_id, &close);
            log.log(&AccessRecord::of(&event));
        }
        let Some(route) = api.routes.disconnect().cloned() else {
            return;
        };
        let calls = self.disconnect_calls.clone();
        self.tracker.spawn(
            async move {
                // A mass close (shutdown, a dead node, a drain) waits here rather than
                // flooding the backend, or overflowing a lambda function's queue.
                let Ok(_call) = calls.acquire_owned().await else {
                    return;
                };
                let event = Event::disconnect(&shared.info, &api.id, &request_id, &close);
                if let Err(error) = route.integration.call(&event, None).await {
                    warn!(%request_id, %error, "$disconnect integration failed");
                }
            }
            .in_current_span(),
        );
    }
}
