//! Interest: which group channels this node listens on. A node subscribes to a group's
//! channel while it holds at least one member of the group, so a group broadcast reaches
//! only the nodes that have a use for it.
//!
//! Owns the subscriber connection's sink (the half of the split pub/sub connection that
//! sends `SUBSCRIBE`/`UNSUBSCRIBE`; [`requests`](super::requests) reads the other half) and
//! each group's subscription state. The rules:
//!
//! - **Settling** a group ([`RedisBackplane::settle_interest`]) makes the subscription
//!   match the truth of [`Local`](crate::cluster::local::Local) *now*: subscribed while the
//!   group has a local member, unsubscribed otherwise. It runs under the group's own lock,
//!   so a join racing a leave cannot end unsubscribed with a member: whichever settles last
//!   sees the final membership.
//! - **A join waits for it**: the join of a member (local or from another node's request)
//!   answers only once Redis confirmed the `SUBSCRIBE` (the confirmation arrives on the
//!   subscriber connection before any message published after it), so every broadcast sent
//!   after the answer reaches the member. A leave settles too, and a closed connection's
//!   emptied groups are settled in the background.
//! - **Generations**: each subscriber connection gets a new generation; a group counts as
//!   subscribed only on the current one. When the connection is lost, every group
//!   subscription went with it; the subscriber reconnects and settles every group with a
//!   local member *before* it reports the backplane connected again.
//! - While the subscriber is disconnected a join does not wait (it answers at once: local
//!   joins work without Redis, and broadcasts answer 503 anyway); the reconnect subscribes.
//!   A `SUBSCRIBE` that fails or times out on a live connection answers "unavailable" and
//!   drops the connection, whose replacement resubscribes everything.
//!
//! Redis Cluster (sharded pub/sub) changes this file: `SSUBSCRIBE` per channel on the
//! shard that owns the group's slot, and a server-sent `sunsubscribe` (slot migration)
//! treated like a lost connection for that shard's groups.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use super::RedisBackplane;
use super::transport::Sink;
use crate::cluster::DeliveryError;
use crate::telemetry::metrics;

/// Group subscriptions and the connection they are made on.
pub(super) struct Interest {
    /// The subscriber connection's sink and generation.
    link: Mutex<Link>,
    /// Each group being settled or subscribed, with its own lock. An entry is removed (under
    /// its lock) once the group is not subscribed, so memory follows the groups held.
    groups: DashMap<Arc<str>, Arc<tokio::sync::Mutex<Slot>>>,
    /// How long a `SUBSCRIBE`/`UNSUBSCRIBE` may take before the connection is given up.
    timeout: Duration,
    /// Wakes the subscriber when a (un)subscribe failed: its connection is given up.
    pub(super) broken: Notify,
}

/// The subscriber connection, as group subscriptions see it.
#[derive(Default)]
struct Link {
    /// Bumped whenever the connection is attached or lost.
    generation: u64,
    /// Where (un)subscribes go; `None` while disconnected.
    sink: Option<Sink>,
    /// Group channels subscribed on this generation.
    held: usize,
}

/// One group's subscription.
#[derive(Default)]
struct Slot {
    /// The generation it is subscribed on (stale generations are not subscribed).
    on: Option<u64>,
}

impl Interest {
    /// Nothing subscribed, no connection yet.
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            link: Mutex::new(Link::default()),
            groups: DashMap::new(),
            timeout,
            broken: Notify::new(),
        }
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscriber connected: group subscriptions go to `sink` from now on. Returns the
    /// connection's generation.
    pub(super) fn attach(&self, sink: Sink) -> u64 {
        let mut link = self.link();
        link.generation += 1;
        link.sink = Some(sink);
        link.held = 0;
        metrics::backplane_group_subscriptions(0);
        link.generation
    }

    /// The connection of `generation` is lost (or given up): its subscriptions went with
    /// it. Returns whether it was the current one.
    pub(super) fn detach(&self, generation: u64) -> bool {
        let mut link = self.link();
        if link.generation != generation {
            return false;
        }
        link.generation += 1;
        link.sink = None;
        link.held = 0;
        metrics::backplane_group_subscriptions(0);
        true
    }

    /// Whether `generation` is the connection in use.
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.link().generation == generation
    }

    fn current(&self) -> (u64, Option<Sink>) {
        let link = self.link();
        (link.generation, link.sink.clone())
    }

    /// One more (`true`) or one fewer group subscription on `generation`.
    fn count(&self, generation: u64, up: bool) {
        let mut link = self.link();
        if link.generation == generation {
            link.held = if up {
                link.held + 1
            } else {
                link.held.saturating_sub(1)
            };
            metrics::backplane_group_subscriptions(link.held);
        }
    }

    /// A command on `generation`'s connection failed: give the connection up.
    fn give_up(&self, generation: u64) {
        if self.detach(generation) {
            self.broken.notify_one();
        }
    }
}

impl RedisBackplane {
    /// Makes this node's subscription to `group`'s channel match its local membership now:
    /// subscribed (confirmed by Redis) while it has a local member, unsubscribed otherwise.
    /// `Err(Unavailable)` when a needed `SUBSCRIBE` failed; while the subscriber is
    /// disconnected it returns `Ok` at once (the reconnect subscribes).
    pub(crate) async fn settle_interest(&self, group: &str) -> Result<(), DeliveryError> {
        let interest = &self.interest;
        let channel = self.keys.group_channel(group);
        loop {
            let slot = interest.groups.entry(group.into()).or_default().clone();
            let mut state = slot.lock().await;
            // Removed (and maybe replaced) while this waited for the lock: start again on
            // the entry that is there now, so one group never has two locks.
            if !interest
                .groups
                .get(group)
                .is_some_and(|s| Arc::ptr_eq(&s, &slot))
            {
                continue;
            }
            let wanted = self.local.has_members(group);
            let (generation, sink) = interest.current();
            let subscribed = state.on == Some(generation);
            let result = match (wanted, subscribed, sink) {
                (true, false, Some(mut sink)) => {
                    match tokio::time::timeout(interest.timeout, sink.subscribe(&channel)).await {
                        Ok(Ok(())) => {
                            state.on = Some(generation);
                            interest.count(generation, true);
                            Ok(())
                        }
                        failed => {
                            tracing::warn!(
                                group,
                                ?failed,
                                "group subscribe failed; reconnecting the subscriber"
                            );
                            state.on = None;
                            interest.give_up(generation);
                            Err(DeliveryError::Unavailable)
                        }
                    }
                }
                (false, true, Some(mut sink)) => {
                    let done =
                        tokio::time::timeout(interest.timeout, sink.unsubscribe(&channel)).await;
                    state.on = None;
                    interest.count(generation, false);
                    if !matches!(done, Ok(Ok(()))) {
                        interest.give_up(generation);
                    }
                    Ok(())
                }
                (_, subscribed, _) => {
                    if !subscribed {
                        state.on = None;
                    }
                    Ok(())
                }
            };
            if state.on.is_none() {
                interest
                    .groups
                    .remove_if(group, |_, s| Arc::ptr_eq(s, &slot));
            }
            return result;
        }
    }

    /// Settles every group with a local member on a new subscriber connection (before it is
    /// reported connected); `false` if one failed (the connection was given up).
    pub(super) async fn resubscribe_all(&self) -> bool {
        use futures_util::StreamExt as _;
        let groups = self.local.group_names();
        let failures = futures_util::stream::iter(groups)
            .map(|group| async move { self.settle_interest(&group).await.is_err() })
            .buffer_unordered(64)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        failures == 0
    }
}
