//! Requests to other nodes and their replies, broadcasts, and this node's subscriber.
//!
//! Owns the requests in flight (by number, until their reply arrives or they time out) and
//! the subscriber: one pub/sub connection listening on this node's inbox, the broadcast
//! channel and the channels of the groups it holds members of
//! ([`interest`](super::interest) manages those). A request from another node runs through
//! [`ops::apply`], the function local callers use (a join then waits for its group's
//! subscription, as a local join does); its typed result goes back on the asker's inbox.
//! It must not turn results into HTTP statuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RedisBackplane;
use super::keys;
use super::transport::{Arrival, Published};
use crate::cluster::ops::{self, Op, Outcome};
use crate::cluster::wire::{Envelope, Wire, WireOp};
use crate::cluster::{DeliveryError, GroupName};
use crate::connections::ConnectionId;
use crate::telemetry::metrics::{self, BackplaneKind, Direction};

/// A request waiting for its reply.
type Pending = oneshot::Sender<Result<Outcome, DeliveryError>>;

/// Requests in flight and the subscriber's state.
pub(super) struct Requests {
    /// Requests this node made, by number, until their reply arrives or they time out.
    pending: DashMap<u64, Pending>,
    /// The next request number (unique on this node).
    next_req: AtomicU64,
    /// How long to wait for a reply before answering "unavailable".
    pub(super) timeout: Duration,
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
    /// Runs `op` on the node that owns `id` (another node) and waits for its answer. The
    /// owner is the node named in the id — or, for a resumable session another node took
    /// over after its node died, the node Redis names as the session's owner: asked only
    /// when the first answer is "gone", so other requests pay nothing for it.
    pub async fn request(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DeliveryError> {
        let started = Instant::now();
        let minted_by = keys::tag(id.node());
        let mut result = self.request_to(&minted_by, id, op.clone()).await;
        if matches!(
            result,
            Err(DeliveryError::Gone | DeliveryError::Unavailable)
        ) {
            match self.session_owner(id).await {
                Ok(Some(owner)) if owner != minted_by => {
                    result = if owner == self.tag {
                        // Moved here just now (or moving: "unavailable" until it is here).
                        self.apply(id, op).await
                    } else {
                        self.request_to(&owner, id, op).await
                    };
                }
                Ok(_) => {}
                // Redis cannot say whether it moved: not "gone" for sure.
                Err(_) => result = Err(DeliveryError::Unavailable),
            }
        }
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

    /// Runs `op` on `id` on the node tagged `target`.
    async fn request_to(
        &self,
        target: &str,
        id: &ConnectionId,
        op: Op,
    ) -> Result<Outcome, DeliveryError> {
        let op = WireOp::of(op).ok_or(DeliveryError::Malformed)?;
        let (from, conn) = (self.tag.clone(), id.to_string());
        self.ask(target, move |req| Wire::Request {
            from,
            req,
            conn,
            op,
        })
        .await
    }

    /// Publishes the request `build` makes (given its number) on the inbox of the node
    /// tagged `target`, and waits for its reply.
    pub(super) async fn ask(
        &self,
        target: &str,
        build: impl FnOnce(u64) -> Wire,
    ) -> Result<Outcome, DeliveryError> {
        let req = self.requests.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.requests.pending.insert(req, tx);
        let _forget = PendingGuard {
            pending: &self.requests.pending,
            req,
        };
        let message = serde_json::to_vec(&build(req)).map_err(|_| DeliveryError::Unavailable)?;
        let receivers = self
            .publish(self.keys.inbox(target), &message, BackplaneKind::Request)
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        if receivers == 0 {
            return Err(self.owner_missing(target).await);
        }
        match tokio::time::timeout(self.requests.timeout, rx).await {
            Ok(Ok(result)) => result,
            _ => Err(DeliveryError::Unavailable),
        }
    }

    /// Runs `op` on a connection whose id this node holds or gave out: here — or, when it
    /// is gone here, on the node Redis names as the holder of the resumable session it
    /// moved to (asked only on "gone", so other operations pay nothing for it).
    pub async fn apply_or_follow(
        &self,
        id: &ConnectionId,
        op: Op,
    ) -> Result<Outcome, DeliveryError> {
        let result = self.apply(id, op.clone()).await;
        if matches!(result, Err(DeliveryError::Gone)) {
            match self.session_owner(id).await {
                Ok(Some(owner)) if owner != self.tag => {
                    return self.request_to(&owner, id, op).await;
                }
                Ok(_) => {}
                // Redis cannot say whether it moved: not "gone" for sure.
                Err(_) => return Err(DeliveryError::Unavailable),
            }
        }
        result
    }

    /// Runs `op` on a connection of this node ([`ops::apply`]), then settles the interest
    /// a join or leave changed: a join answers once this node is subscribed to the group.
    pub async fn apply(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DeliveryError> {
        let change = op.group_change().map(|(g, joins)| (g.clone(), joins));
        let posted = matches!(op, Op::Post(_));
        let outcome = ops::apply(&self.local, &self.records, id, op)?;
        if let Some((group, joins)) = change {
            self.after_membership(&group, joins).await?;
        }
        if posted {
            self.after_post(id).await;
        }
        Ok(outcome)
    }

    /// After a POST queued a frame here: a resumable session's frame is acknowledged only
    /// once its history's copy is in Redis, so a 200 survives this node dying (another node
    /// resumes the session from Redis). Other connections do not wait. If Redis cannot take
    /// it the POST is still acknowledged — the frame is queued and kept here — and the
    /// failure counted (`resume_mirror_unconfirmed`).
    async fn after_post(&self, id: &ConnectionId) {
        let resumable = self
            .local
            .registry
            .get(id)
            .is_some_and(|h| h.shared.resume.is_some());
        if resumable && !self.sessions.flushed(self.requests.timeout).await {
            metrics::dropped("resume_mirror_unconfirmed", 1);
        }
    }

    /// After a join or leave of `group` ran here: settles the group's interest. A join fails
    /// ("unavailable") when its subscription could not be made; a leave never fails for it.
    async fn after_membership(&self, group: &GroupName, joins: bool) -> Result<(), DeliveryError> {
        let settled = self.settle_interest(group.as_str()).await;
        if joins { settled } else { Ok(()) }
    }

    /// Publishes a broadcast, encoded once: to a group's channel (reaching only the nodes
    /// that hold a member; none is fine), or to every node on the broadcast channel. Only
    /// when every node listed as a subscriber is subscribed (see
    /// [`interest`](super::interest)); listed nodes found dead are forgotten and it tries
    /// once more, else "unavailable" with nothing delivered.
    pub async fn publish_broadcast(
        &self,
        group: Option<&GroupName>,
        message: &tokio_tungstenite::tungstenite::Message,
    ) -> Result<(), DeliveryError> {
        let envelope = Envelope::encode(group, message).ok_or(DeliveryError::Malformed)?;
        let (channel, set, kind) = match group {
            Some(g) => (
                self.keys.group_channel(g.as_str()),
                self.keys.group_subscribers(g.as_str()),
                BackplaneKind::Group,
            ),
            None => (
                self.keys.broadcast(),
                self.keys.broadcast_subscribers(),
                BackplaneKind::Broadcast,
            ),
        };
        for attempt in 0..2 {
            match self.publish_checked(&set, &channel, &envelope, kind).await {
                Ok(Published::Delivered) => return Ok(()),
                Ok(Published::Refused { subscribed, listed }) => {
                    debug!(
                        channel,
                        subscribed, listed, "broadcast refused: a listed node is not subscribed"
                    );
                    if attempt > 0 || self.forget_dead_subscribers(&set).await == 0 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Err(DeliveryError::Unavailable)
    }

    /// Keeps the subscriber connected, reconnecting with backoff, and dispatches what
    /// arrives. After each (re)connect it subscribes to this node's inbox, the broadcast
    /// channel and every group channel it has members for, and only then reports itself
    /// subscribed.
    pub(super) async fn subscriber(self: Arc<Self>, shutdown: CancellationToken) {
        let channels = [self.keys.inbox(&self.tag), self.keys.broadcast()];
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = tokio::time::timeout(Duration::from_secs(2), self.subscribe(&channels)) => a,
            };
            match attempt {
                Ok(Ok((sink, mut arrivals))) => {
                    let generation = self.interest.attach(sink);
                    let resubscribed = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        ok = self.resubscribe_all() => ok
                            && self.set_member(&self.keys.broadcast_subscribers(), true).await.is_ok()
                            && self.interest.is_current(generation),
                    };
                    if resubscribed {
                        backoff = Duration::from_millis(100);
                        self.requests.subscribed.store(true, Ordering::Relaxed);
                        metrics::backplane_connected(self.is_connected());
                        info!(node = %self.tag, groups = self.local.group_names().len(), "backplane subscribed");
                        loop {
                            let arrival = tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = self.interest.broken.notified() => {
                                    if self.interest.is_current(generation) {
                                        continue;
                                    }
                                    break;
                                }
                                a = arrivals.next() => a,
                            };
                            match arrival {
                                Some(Arrival::Message(payload)) => self.receive(payload),
                                Some(Arrival::Unsubscribed(channel)) => {
                                    if self.still_wanted(&channel) {
                                        warn!(node = %self.tag, channel, "Redis dropped a subscription (slot moved?)");
                                        break;
                                    }
                                }
                                Some(Arrival::Lost) | None => break,
                            }
                        }
                        self.requests.subscribed.store(false, Ordering::Relaxed);
                        metrics::backplane_connected(self.is_connected());
                        warn!(node = %self.tag, "backplane subscription lost; reconnecting");
                    } else {
                        debug!("group resubscription failed");
                    }
                    self.interest.detach(generation);
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

    /// Whether this node still needs a subscription to `channel` that Redis dropped on its
    /// own: its inbox and the broadcast channel always, a group's channel while the group
    /// has a local member (a leave's own unsubscribe is not a loss).
    fn still_wanted(&self, channel: &str) -> bool {
        match self.keys.group_of_channel(channel) {
            Some(group) => self.local.has_members(group),
            None => true,
        }
    }

    /// One message from the subscriber: a broadcast envelope, or a request or reply (JSON).
    fn receive(self: &Arc<Self>, payload: bytes::Bytes) {
        let payload_len = payload.len();
        if Envelope::is_envelope(&payload) {
            // Every recipient shares the one buffer.
            match Envelope::decode(payload) {
                Some(Envelope { group, message }) => {
                    let kind = match group {
                        Some(_) => BackplaneKind::Group,
                        None => BackplaneKind::Broadcast,
                    };
                    metrics::backplane_message(Direction::In, kind, payload_len);
                    let fanout = self
                        .local
                        .broadcast(group.as_ref().map(GroupName::as_str), &message);
                    debug!(
                        delivered = fanout.delivered,
                        dropped = fanout.dropped,
                        "broadcast delivered"
                    );
                }
                None => warn!("unreadable backplane broadcast"),
            }
            return;
        }
        match serde_json::from_slice::<Wire>(&payload) {
            Ok(wire) => {
                let kind = match wire {
                    Wire::Request { .. } | Wire::HandOver { .. } => BackplaneKind::Request,
                    Wire::Reply { .. } => BackplaneKind::Reply,
                    Wire::Cut { group: Some(_), .. } => BackplaneKind::Group,
                    Wire::Cut { group: None, .. } => BackplaneKind::Broadcast,
                };
                metrics::backplane_message(Direction::In, kind, payload_len);
                self.dispatch(wire);
            }
            Err(error) => warn!(%error, "unreadable backplane message"),
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
                // Applied here, in arrival order; a join's subscription, and a resumable
                // session's copy of a POST in Redis, are awaited before the reply, off the
                // subscriber's loop.
                let (result, (change, posted)) = match ConnectionId::parse(&conn) {
                    // A name no node gives out: no such connection.
                    None => (Err(DeliveryError::Gone), (None, None)),
                    Some(id) => match op.into_op() {
                        Err(e) => (Err(e), (None, None)),
                        Ok(op) => {
                            let change = op.group_change().map(|(g, joins)| (g.clone(), joins));
                            let posted = matches!(op, Op::Post(_)).then_some(id);
                            (
                                ops::apply(&self.local, &self.records, &id, op),
                                (change, posted),
                            )
                        }
                    },
                };
                let this = self.clone();
                self.tracker.spawn(async move {
                    let result = match (result, change) {
                        (Ok(outcome), Some((group, joins))) => {
                            this.after_membership(&group, joins).await.map(|()| outcome)
                        }
                        (result, _) => result,
                    };
                    if let (Ok(_), Some(id)) = (&result, posted) {
                        this.after_post(&id).await;
                    }
                    this.reply(&from, req, result).await;
                });
            }
            Wire::Reply { req, result } => {
                if let Some((_, tx)) = self.requests.pending.remove(&req) {
                    let _ = tx.send(result);
                }
            }
            Wire::HandOver {
                from,
                req,
                conn,
                secret,
                move_id,
                groups,
            } => {
                let this = self.clone();
                self.tracker.spawn(async move {
                    let result = match ConnectionId::parse(&conn) {
                        Some(id) => {
                            this.hand_over(id, &secret, (&from, &move_id), &groups)
                                .await
                        }
                        None => Err(DeliveryError::Gone),
                    };
                    this.reply(&from, req, result).await;
                });
            }
            // In the channel's order with its broadcasts: handled right here.
            Wire::Cut { conn, group } => self.cut_arrived(&conn, group),
        }
    }

    /// Answers request `req` of the node tagged `to`, on its inbox.
    async fn reply(&self, to: &str, req: u64, result: Result<Outcome, DeliveryError>) {
        if let Ok(bytes) = serde_json::to_vec(&Wire::Reply { req, result }) {
            let _ = self
                .publish(self.keys.inbox(to), &bytes, BackplaneKind::Reply)
                .await;
        }
    }

    /// Settles the groups a closed connection left (those now without a local member are
    /// unsubscribed), in the background.
    pub fn groups_left(self: &Arc<Self>, groups: &[Arc<str>]) {
        for group in groups {
            if self.local.has_members(group) {
                continue;
            }
            let this = self.clone();
            let group = group.clone();
            self.tracker.spawn(async move {
                let _ = this.settle_interest(&group).await;
            });
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
