//! Moving a resumable session between two live nodes (cluster mode, docs/resume.md): its
//! client dropped and resumed through another node — the usual case behind a load
//! balancer — while the node holding the session is alive. The session moves to the node
//! the client reached, with its id, its groups, and every frame after the client's offset.
//!
//! The two halves, and the one point that makes the move exact:
//!
//! - **Arriving** (the new node, [`RedisBackplane::receive_session`]): builds the session
//!   with no offsets yet (frames reaching it wait unnumbered), marks it in transit (any
//!   operation on it answers "unavailable", retry-safe), listens to its groups' channels,
//!   and asks the holder to hand it over ([`Wire::HandOver`]).
//! - **Leaving** (the holder, [`RedisBackplane::hand_over`]): checks the secret, marks the
//!   session in transit, takes it off its socket if one is still attached, then publishes a
//!   [`Wire::Cut`] on each of the session's group channels and on the broadcast channel.
//!   Both nodes read each channel in the one order Redis gives it: a broadcast before the
//!   cut is the old node's to deliver, a broadcast after it the new node's — the old node
//!   takes the session out of that channel's delivery at the cut, the new node puts it in
//!   at the cut. Once the old node has seen all its cuts nothing reaches the session there;
//!   it flushes the session's history to Redis, writes the new owner and the next offset
//!   into the session's hash, ends the session without `$disconnect`, and answers
//!   [`Outcome::Moved`].
//! - The new node then reads the frames after the client's offset from Redis, numbers what
//!   waited after them, and holds the session from now on (its registry, its records, the
//!   owner Redis names, which routes requests for the id to it).
//!
//! A move that fails before the holder ended the session leaves it where it was (the
//! client is told to retry). The holder can fail after publishing cuts only when Redis or
//! its link fails mid-move; broadcasts between a cut and its undoing may then be missed by
//! the session (said in docs/resume.md).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use dashmap::DashMap;
use tokio::sync::Notify;
use tracing::{debug, info};

use super::RedisBackplane;
use crate::cluster::ops::Outcome;
use crate::cluster::wire::Wire;
use crate::cluster::{DeliveryError, Records as _};
use crate::connections::{ConnHandle, ConnShared, ConnectionId};
use crate::telemetry::metrics::BackplaneKind;

/// A channel a cut is published on: a group's, or the broadcast channel (`None`).
type Channel = Option<Arc<str>>;

/// The moves this node takes part in.
#[derive(Default)]
pub(super) struct Moves {
    /// Sessions arriving here, with the channels whose cut this node has seen (from which
    /// on it delivers that channel's broadcasts to the session).
    arriving: DashMap<ConnectionId, (ConnHandle, HashSet<Channel>)>,
    /// Sessions leaving, with the channels whose cut this node has not seen yet.
    leaving: DashMap<ConnectionId, (HashSet<Channel>, Arc<Notify>)>,
}

impl RedisBackplane {
    /// Moves resumable session `shared` (built here by the caller, arriving: its groups
    /// listed, no offsets yet) from the node tagged `holder`, which must still hold it.
    /// `Ok` once this node holds it; the frames after the client's offset are then in
    /// Redis, and the offset the next frame gets is in the session's hash.
    pub async fn receive_session(
        self: &Arc<Self>,
        shared: &Arc<ConnShared>,
        holder: &str,
        secret: &str,
    ) -> Result<(), DeliveryError> {
        let id = shared.info.id;
        if holder == self.tag || self.local.registry.get(&id).is_some() {
            return Err(DeliveryError::Unavailable); // held here already (or being adopted)
        }
        if !self.local.begin_transit(id) {
            return Err(DeliveryError::Unavailable); // another resume is moving it here
        }
        let move_id = format!("{:016x}", rand::random::<u64>());
        let groups: Vec<Arc<str>> = shared
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let handle = ConnHandle::new(shared.clone());
        self.moves
            .arriving
            .insert(id, (handle.clone(), HashSet::new()));
        self.local.hold(&groups);
        let asked = async {
            for group in &groups {
                self.settle_interest(group).await?;
            }
            self.ask_hand_over(holder, &id, secret, &move_id, &groups)
                .await
        }
        .await;
        // No answer (or a failure) is not the last word: the holder may still switch the
        // owner. Writing the move off in Redis decides it, for both: it fails unless the
        // holder had already named this node.
        let moved = match asked {
            Ok(_) => Ok(()),
            Err(error) => match self.abandon_move(&id, holder, &move_id).await {
                // The holder switched first: it moved (if to this node).
                Ok(false) if self.session_owner(&id).await == Ok(Some(self.tag.clone())) => Ok(()),
                _ => Err(error),
            },
        };
        let seen = self
            .moves
            .arriving
            .remove(&id)
            .map(|(_, (_, seen))| seen)
            .unwrap_or_default();
        match moved {
            Ok(()) => {
                // A cut this node missed (its link was rebuilt meanwhile): delivered from now.
                if !seen.contains(&None) {
                    self.local.registry.insert(handle.clone());
                }
                for group in &groups {
                    if !seen.contains(&Some(group.clone())) {
                        self.local.admit(group, handle.clone());
                    }
                }
                self.local.adopt(id);
                self.records.connected(shared);
                self.records.reclaimed(&id, &groups);
                info!(conn = %shared.info.id_text, from = holder, "resumable session moved here");
            }
            Err(error) => {
                debug!(conn = %shared.info.id_text, %error, "resumable session did not move here");
                self.local.registry.remove(&id);
                for group in &groups {
                    self.local.dismiss(group, &id);
                }
            }
        }
        self.local.unhold(&groups);
        if moved.is_err() {
            self.local.end_transit(id);
        }
        self.groups_left(&groups);
        moved
    }

    /// Asks the node tagged `holder` to hand session `id` over to this node.
    async fn ask_hand_over(
        &self,
        holder: &str,
        id: &ConnectionId,
        secret: &str,
        move_id: &str,
        groups: &[Arc<str>],
    ) -> Result<Outcome, DeliveryError> {
        let (from, conn, secret) = (self.tag.clone(), id.to_string(), secret.to_owned());
        let move_id = move_id.to_owned();
        let groups = groups.iter().map(|g| g.to_string()).collect();
        self.ask(holder, move |req| Wire::HandOver {
            from,
            req,
            conn,
            secret,
            move_id,
            groups,
        })
        .await
    }

    /// The holder's half: hands session `id` over to the node tagged `to`, whose client
    /// presented `secret` and which listens to `groups` for it.
    pub(super) async fn hand_over(
        self: &Arc<Self>,
        id: ConnectionId,
        secret: &str,
        to: (&str, &str),
        groups: &[String],
    ) -> Result<Outcome, DeliveryError> {
        let handle = self.local.registry.get(&id).ok_or(DeliveryError::Gone)?;
        let resume = handle.shared.resume.as_deref().ok_or(DeliveryError::Gone)?;
        if !resume.secret_matches(secret) || !self.local.owns(&id) {
            return Err(DeliveryError::Gone);
        }
        if !self.local.begin_transit(id) {
            return Err(DeliveryError::Unavailable); // moving (or arriving) already
        }
        // Half the asker's patience: past it, the session stays here (the asker, which
        // waits the whole of it, then reads who holds it).
        let deadline = Instant::now() + self.requests.timeout / 2;
        let result = self
            .hand_over_in_transit(&handle, to, groups, deadline)
            .await;
        self.local.end_transit(id);
        result
    }

    async fn hand_over_in_transit(
        self: &Arc<Self>,
        handle: &ConnHandle,
        (to, move_id): (&str, &str),
        groups: &[String],
        deadline: Instant,
    ) -> Result<Outcome, DeliveryError> {
        let shared = &handle.shared;
        let id = shared.info.id;
        let resume = shared.resume.as_deref().ok_or(DeliveryError::Gone)?;
        let left = || deadline.saturating_duration_since(Instant::now());
        if !resume.take_over(&shared.outbox, left()).await {
            return Err(DeliveryError::Unavailable);
        }
        // No join or leave runs while in transit: the groups are final.
        let mine: Vec<Arc<str>> = shared
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let same =
            mine.len() == groups.len() && mine.iter().all(|g| groups.iter().any(|o| **o == **g));
        if !same {
            return Err(DeliveryError::Unavailable); // it joined or left one since: ask again
        }
        self.cut(handle, &mine, left()).await?;
        // Nothing reaches the session here any more: its history is final.
        let Some(next) = resume.seal() else {
            self.uncut(handle, &mine);
            return Err(DeliveryError::Gone); // it ended meanwhile
        };
        let flushed = self.sessions.flushed(left()).await && !left().is_zero();
        // The point of no return, decided in Redis: unless the asker wrote this move off.
        let switched = if flushed {
            self.session_moved(&id, (&self.tag, to), next, move_id)
                .await
        } else {
            Err(DeliveryError::Unavailable)
        };
        if let Err(error) = switched {
            resume.unseal();
            self.uncut(handle, &mine);
            return Err(error);
        }
        resume.hand_off();
        self.local.forget_adopted(&id);
        self.records.released(&id, &mine);
        self.groups_left(&mine);
        // Its suspension's watcher sees it moved and lets it go without `$disconnect`.
        shared.outbox.wake();
        info!(conn = %shared.info.id_text, to, next, "resumable session moved away");
        Ok(Outcome::Moved { next })
    }

    /// Publishes the session's cuts and waits until this node has seen each of them (and
    /// so stopped delivering that channel's broadcasts to it). On failure every channel is
    /// delivered here again.
    async fn cut(
        &self,
        handle: &ConnHandle,
        groups: &[Arc<str>],
        limit: Duration,
    ) -> Result<(), DeliveryError> {
        let id = handle.shared.info.id;
        let mut channels: HashSet<Channel> = groups.iter().cloned().map(Some).collect();
        channels.insert(None);
        let done = Arc::new(Notify::new());
        self.moves
            .leaving
            .insert(id, (channels.clone(), done.clone()));
        let publish = async {
            for channel in &channels {
                let cut = Wire::Cut {
                    conn: id.to_string(),
                    group: channel.as_ref().map(|g| g.to_string()),
                };
                let bytes = serde_json::to_vec(&cut).map_err(|_| DeliveryError::Malformed)?;
                let (name, kind) = match channel {
                    Some(g) => (self.keys.group_channel(g), BackplaneKind::Group),
                    None => (self.keys.broadcast(), BackplaneKind::Broadcast),
                };
                self.publish(name, &bytes, kind)
                    .await
                    .map_err(|_| DeliveryError::Unavailable)?;
            }
            Ok::<(), DeliveryError>(())
        };
        let result = match publish.await {
            Ok(()) => tokio::time::timeout(limit, async {
                loop {
                    let notified = done.notified();
                    let left = self.moves.leaving.get(&id).is_some_and(|e| !e.0.is_empty());
                    if !left {
                        return;
                    }
                    notified.await;
                }
            })
            .await
            .map_err(|_| DeliveryError::Unavailable),
            Err(e) => Err(e),
        };
        self.moves.leaving.remove(&id);
        if result.is_err() {
            self.uncut(handle, groups);
        }
        result
    }

    /// Delivers every channel of a session here again (a move that failed), unless it
    /// closed meanwhile.
    fn uncut(&self, handle: &ConnHandle, groups: &[Arc<str>]) {
        if handle.shared.outbox.is_closed() {
            return;
        }
        self.local.registry.insert(handle.clone());
        for group in groups {
            self.local.admit(group, handle.clone());
        }
    }

    /// A cut arrived on a channel: the session stops receiving that channel's broadcasts
    /// here if it is leaving, and starts if it is arriving.
    pub(super) fn cut_arrived(&self, conn: &str, group: Option<String>) {
        let Some(id) = ConnectionId::parse(conn) else {
            return;
        };
        let channel: Channel = group.map(Arc::from);
        if let Some(mut leaving) = self.moves.leaving.get_mut(&id) {
            if leaving.0.remove(&channel) {
                match &channel {
                    Some(g) => self.local.dismiss(g, &id),
                    None => {
                        self.local.registry.remove(&id);
                    }
                }
                leaving.1.notify_waiters();
            }
            return;
        }
        if let Some(mut arriving) = self.moves.arriving.get_mut(&id) {
            let handle = arriving.0.clone();
            if arriving.1.insert(channel.clone()) {
                match &channel {
                    Some(g) => self.local.admit(g, handle),
                    None => self.local.registry.insert(handle),
                }
            }
        }
    }
}
