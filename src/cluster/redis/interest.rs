//! Interest: which group channels this node listens on, and the record of it that makes a
//! broadcast's acknowledgement honest. A node subscribes to a group's channel while it holds
//! at least one member of the group, so a group broadcast reaches only the nodes that have
//! a use for it.
//!
//! Owns the subscriber link's sink (the half that sends (S)SUBSCRIBE/(S)UNSUBSCRIBE;
//! [`requests`](super::requests) reads the other half), each group's subscription state,
//! and this node's entries in the groups' *subscriber sets*. The rules:
//!
//! - **Settling** a group ([`RedisBackplane::settle_interest`]) makes the subscription
//!   match the truth of [`Local`](crate::cluster::local::Local) *now*: subscribed while the
//!   group has a local member, unsubscribed otherwise. It runs under the group's own lock,
//!   so a join racing a leave cannot end unsubscribed with a member: whichever settles last
//!   sees the final membership.
//! - **A join waits for it**: the join of a member (local or from another node's request)
//!   answers only once Redis confirmed the subscription (the confirmation arrives on the
//!   link before any message published after it), so every broadcast sent after the answer
//!   reaches the member. A leave settles too, and a closed connection's emptied groups are
//!   settled in the background.
//! - **Subscriber sets**: next to each group's channel (same hash slot) Redis keeps the set
//!   of nodes that must receive it (`<p>:{g.<group>}:subscribers`; the broadcast channel has
//!   `<p>:{all}:subscribers`). A node adds itself once its subscription is confirmed and
//!   removes itself before it unsubscribes. A broadcast is published by a script that first
//!   compares the set's size with Redis's own count of subscribers on the channel: fewer
//!   subscribers than listed nodes means some node's subscription is missing (its link is
//!   being rebuilt after a failover or a slot move, or the node died), and the broadcast is
//!   refused as a whole — nothing delivered, "unavailable" to the caller, safe to retry —
//!   instead of acknowledged and lost. A listed node found dead (lease gone) is removed by
//!   the publisher, which then tries again.
//! - **Generations**: each subscriber link gets a new generation; a group counts as
//!   subscribed only on the current one. When the link is lost, every subscription went
//!   with it (but not the set entries, which is what refuses broadcasts meanwhile); the
//!   subscriber reconnects and settles every group it holds a member of or is listed for
//!   *before* it reports the backplane connected again.
//! - While the link is down a join does not wait for a subscription (it answers at once:
//!   local joins work without Redis), but it still lists the node when Redis answers, so
//!   broadcasts from other nodes are refused rather than missed until the reconnect
//!   subscribes. A subscribe that fails or times out on a live link answers "unavailable"
//!   and drops the link, whose replacement resubscribes everything. A failed removal from
//!   a set keeps the subscription (the node goes on receiving, harmlessly), and the next
//!   settle of the group tries again.
//!
//! On a Redis Cluster the subscriptions are sharded ([`transport`](super::transport)): a
//! moved slot or a failed-over master drops them, and the link is rebuilt.

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
    /// This node is in the group's subscriber set (as far as it knows).
    listed: bool,
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
    /// Makes this node's subscription to `group`'s channel, and its entry in the group's
    /// subscriber set, match its local membership now: subscribed (confirmed by Redis) and
    /// listed while it has a local member; unlisted, then unsubscribed, otherwise.
    /// `Err(Unavailable)` when a needed subscription failed; while the link is down it
    /// returns `Ok` at once (the reconnect subscribes).
    pub(crate) async fn settle_interest(&self, group: &str) -> Result<(), DeliveryError> {
        let interest = &self.interest;
        let channel = self.keys.group_channel(group);
        let set = self.keys.group_subscribers(group);
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
            let result = if wanted {
                self.subscribe_group(&mut state, generation, sink, &channel, &set)
                    .await
            } else {
                self.unsubscribe_group(&mut state, generation, sink, &channel, &set)
                    .await;
                Ok(())
            };
            if state.on.is_none() && !state.listed {
                interest
                    .groups
                    .remove_if(group, |_, s| Arc::ptr_eq(s, &slot));
            }
            return result;
        }
    }

    /// Subscribes (unless subscribed on `generation`) and lists this node.
    async fn subscribe_group(
        &self,
        state: &mut Slot,
        generation: u64,
        sink: Option<Sink>,
        channel: &str,
        set: &str,
    ) -> Result<(), DeliveryError> {
        let interest = &self.interest;
        if state.on != Some(generation) {
            state.on = None;
            if let Some(mut sink) = sink {
                match tokio::time::timeout(interest.timeout, sink.subscribe(channel)).await {
                    Ok(Ok(())) => {
                        state.on = Some(generation);
                        interest.count(generation, true);
                        // Listed again on every new link: Redis may have lost the set
                        // (restarted empty) since this node last listed itself.
                        state.listed = false;
                    }
                    failed => {
                        tracing::warn!(
                            channel,
                            ?failed,
                            "subscribe failed; reconnecting the subscriber"
                        );
                        interest.give_up(generation);
                        return Err(DeliveryError::Unavailable);
                    }
                }
            }
        }
        if !state.listed {
            match self.set_member(set, true).await {
                Ok(()) => state.listed = true,
                // Subscribed but not listed: broadcasts still reach it; the protection
                // against missing them is what failed, and the join says so.
                Err(error) if state.on.is_some() => {
                    tracing::warn!(set, %error, "could not list this node as a subscriber");
                    return Err(DeliveryError::Unavailable);
                }
                // The link is down and so, most likely, is Redis: the reconnect lists it.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Unlists this node, then unsubscribes (a failed unlisting keeps the subscription).
    async fn unsubscribe_group(
        &self,
        state: &mut Slot,
        generation: u64,
        sink: Option<Sink>,
        channel: &str,
        set: &str,
    ) {
        let interest = &self.interest;
        if state.listed {
            if let Err(error) = self.set_member(set, false).await {
                tracing::debug!(set, %error, "could not unlist this node; staying subscribed");
                return;
            }
            state.listed = false;
        }
        if state.on == Some(generation) {
            if let Some(mut sink) = sink {
                let done = tokio::time::timeout(interest.timeout, sink.unsubscribe(channel)).await;
                if !matches!(done, Ok(Ok(()))) {
                    interest.give_up(generation);
                }
            }
            interest.count(generation, false);
        }
        state.on = None;
    }

    /// Adds this node to (or removes it from) the subscriber set `set`.
    pub(super) async fn set_member(&self, set: &str, add: bool) -> Result<(), redis::RedisError> {
        let command = if add { "SADD" } else { "SREM" };
        redis::cmd(command)
            .arg(set)
            .arg(&self.tag)
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Settles every group with a local member or an entry here (subscribed or listed) on a
    /// new subscriber link (before it is reported connected); `false` if one failed (the
    /// link was given up).
    pub(super) async fn resubscribe_all(&self) -> bool {
        use futures_util::StreamExt as _;
        let mut groups = self.local.group_names();
        let known: Vec<Arc<str>> = self
            .interest
            .groups
            .iter()
            .map(|e| e.key().clone())
            .collect();
        let held: std::collections::HashSet<Arc<str>> = groups.iter().cloned().collect();
        groups.extend(known.into_iter().filter(|g| !held.contains(g)));
        let failures = futures_util::stream::iter(groups)
            .map(|group| async move { self.settle_interest(&group).await.is_err() })
            .buffer_unordered(64)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        failures == 0
    }
}
