//! Requests to other nodes and their replies, broadcasts, and this node's subscriber.
//!
//! Owns the requests in flight (by number, until their reply arrives or they time out) and
//! the subscription to this node's inbox and the broadcast channel. A request from another
//! node runs through [`ops::apply`], the function local callers use; its typed result goes
//! back on the asker's inbox. It must not turn results into HTTP statuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::StreamExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RedisBackplane;
use super::keys;
use crate::cluster::DeliveryError;
use crate::cluster::ops::{self, Op, Outcome};
use crate::cluster::wire::{Payload, Wire, WireOp};
use crate::connections::ConnectionId;
use crate::telemetry::metrics;

/// A request waiting for its reply.
type Pending = oneshot::Sender<Result<Outcome, DeliveryError>>;

/// Requests in flight and the subscriber's state.
pub(super) struct Requests {
    /// Requests this node made, by number, until their reply arrives or they time out.
    pending: DashMap<u64, Pending>,
    /// The next request number (unique on this node).
    next_req: AtomicU64,
    /// How long to wait for a reply before answering "unavailable".
    timeout: Duration,
    /// The subscriber is subscribed (half of [`RedisBackplane::is_connected`]).
    pub(super) subscribed: AtomicBool,
}

impl Requests {
    /// No request in flight, not yet subscribed.
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            pending: DashMap::new(),
            next_req: AtomicU64::new(1),
            timeout,
            subscribed: AtomicBool::new(false),
        }
    }
}

impl RedisBackplane {
    /// Runs `op` on the node that owns `id` (another node) and waits for its answer.
    pub async fn request(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DeliveryError> {
        let started = Instant::now();
        let result = self.request_inner(id, op).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(DeliveryError::Gone) => "gone",
            Err(DeliveryError::Full) => "full",
            Err(DeliveryError::Unavailable) => "unavailable",
            Err(DeliveryError::Malformed) => "malformed",
        };
        metrics::backplane_request(started.elapsed().as_secs_f64(), outcome);
        result
    }

    async fn request_inner(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DeliveryError> {
        let op = WireOp::of(op).ok_or(DeliveryError::Malformed)?;
        let target = keys::tag(id.node());
        let req = self.requests.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.requests.pending.insert(req, tx);
        let _forget = PendingGuard {
            pending: &self.requests.pending,
            req,
        };
        let message = serde_json::to_string(&Wire::Request {
            from: self.tag.clone(),
            req,
            conn: id.to_string(),
            op,
        })
        .map_err(|_| DeliveryError::Unavailable)?;
        let receivers = self
            .publish(self.keys.inbox(&target), message)
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        if receivers == 0 {
            return Err(self.owner_missing(&target).await);
        }
        match tokio::time::timeout(self.requests.timeout, rx).await {
            Ok(Ok(result)) => result,
            _ => Err(DeliveryError::Unavailable),
        }
    }

    /// Publishes a broadcast for every node (this one included).
    pub async fn publish_broadcast(
        &self,
        group: Option<&str>,
        payload: Payload,
    ) -> Result<(), DeliveryError> {
        let message = serde_json::to_string(&Wire::Broadcast {
            from: self.tag.clone(),
            group: group.map(str::to_owned),
            payload,
        })
        .map_err(|_| DeliveryError::Unavailable)?;
        self.publish(self.keys.broadcast(), message)
            .await
            .map(drop)
            .map_err(|_| DeliveryError::Unavailable)
    }

    /// Keeps a subscription to this node's inbox and the broadcast channel, reconnecting
    /// with backoff, and dispatches what arrives.
    pub(super) async fn subscriber(self: Arc<Self>, shutdown: CancellationToken) {
        let channels = [self.keys.inbox(&self.tag), self.keys.broadcast()];
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = tokio::time::timeout(Duration::from_secs(2), self.subscribe(&channels)) => a,
            };
            match attempt {
                Ok(Ok(pubsub)) => {
                    backoff = Duration::from_millis(100);
                    self.requests.subscribed.store(true, Ordering::Relaxed);
                    info!(node = %self.tag, "backplane subscribed");
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = messages.next() => m,
                        };
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<Wire>(message.get_payload_bytes()) {
                            Ok(wire) => self.dispatch(wire),
                            Err(error) => warn!(%error, "unreadable backplane message"),
                        }
                    }
                    self.requests.subscribed.store(false, Ordering::Relaxed);
                    warn!(node = %self.tag, "backplane subscription lost; reconnecting");
                }
                Ok(Err(error)) => debug!(%error, "backplane subscribe failed"),
                Err(_) => debug!("backplane subscribe timed out"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn dispatch(self: &Arc<Self>, wire: Wire) {
        match wire {
            Wire::Request {
                from,
                req,
                conn,
                op,
            } => {
                let result = match ConnectionId::parse(&conn) {
                    // A name no node gives out: no such connection.
                    None => Err(DeliveryError::Gone),
                    Some(id) => op
                        .into_op()
                        .and_then(|op| ops::apply(&self.local, &self.records, &id, op)),
                };
                let reply = Wire::Reply { req, result };
                let channel = self.keys.inbox(&from);
                let this = self.clone();
                self.tracker.spawn(async move {
                    if let Ok(text) = serde_json::to_string(&reply) {
                        let _ = this.publish(channel, text).await;
                    }
                });
            }
            Wire::Reply { req, result } => {
                if let Some((_, tx)) = self.requests.pending.remove(&req) {
                    let _ = tx.send(result);
                }
            }
            Wire::Broadcast { group, payload, .. } => {
                if let Some(message) = payload.into_message() {
                    let fanout = self.local.broadcast(group.as_deref(), &message);
                    debug!(
                        delivered = fanout.delivered,
                        dropped = fanout.dropped,
                        "broadcast delivered"
                    );
                }
            }
        }
    }
}

/// Removes a pending request however `request` ends.
struct PendingGuard<'a> {
    pending: &'a DashMap<u64, Pending>,
    req: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(&self.req);
    }
}
