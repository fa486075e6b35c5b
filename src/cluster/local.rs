//! This node's half of every cluster operation: its registry and its local group
//! membership. Delivering to a connection always ends here, on the node that owns it.
//!
//! Group membership is indexed by group → member handles, so a broadcast touches only its
//! members and never looks anything up per recipient. Every send is a `try_send`: a
//! broadcast never waits on a slow member (a full queue counts as dropped).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Message;

use super::{ConnectionRecord, GroupName, Page};
use crate::connections::{
    Close, ConnHandle, ConnShared, ConnectionId, NodeTag, Registry, SendError,
};

/// What a broadcast did on one node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Members whose queue took the message.
    pub delivered: usize,
    /// Members whose queue was full (slow consumers).
    pub dropped: usize,
}

/// The connections and groups this node holds.
#[derive(Debug)]
pub struct Local {
    /// This node.
    pub node: NodeTag,
    /// Connections by id.
    pub registry: Registry,
    /// Group → its local members. Sharded map: joins and broadcasts of different groups
    /// rarely contend; guards are never held across an `.await`.
    groups: DashMap<Arc<str>, HashMap<ConnectionId, ConnHandle>>,
    /// Connections of other nodes this node took over (resumable sessions moved here,
    /// cluster mode): they live here although their id names another node.
    adopted: IdSet,
    /// Resumable sessions moving between this node and another (either way, cluster
    /// mode): operations on them answer "unavailable" until the move is over.
    in_transit: IdSet,
    /// Groups this node listens to for a session arriving here (it becomes their member
    /// when its old node stops delivering to it): group → how many arrivals.
    held: DashMap<Arc<str>, usize>,
}

/// A set of connection ids that is almost always empty: while it is, asking costs one
/// atomic load.
#[derive(Debug, Default)]
struct IdSet {
    ids: dashmap::DashSet<ConnectionId>,
    len: std::sync::atomic::AtomicUsize,
}

impl IdSet {
    fn contains(&self, id: &ConnectionId) -> bool {
        self.len.load(Ordering::Relaxed) > 0 && self.ids.contains(id)
    }

    /// Adds `id`; `false` if it was there already.
    fn insert(&self, id: ConnectionId) -> bool {
        let added = self.ids.insert(id);
        if added {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    fn remove(&self, id: &ConnectionId) {
        if self.ids.remove(id).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Local {
    /// An empty node.
    pub fn new(node: NodeTag) -> Self {
        Self {
            node,
            registry: Registry::default(),
            groups: DashMap::new(),
            adopted: IdSet::default(),
            in_transit: IdSet::default(),
            held: DashMap::new(),
        }
    }

    /// Whether this node holds `id` (its own, or one it took over).
    pub fn owns(&self, id: &ConnectionId) -> bool {
        id.node() == self.node || self.adopted.contains(id)
    }

    /// Holds `id` of another node from now on (a resumable session taken over).
    pub fn adopt(&self, id: ConnectionId) {
        self.adopted.insert(id);
    }

    /// Marks `id` as moving unless it is already: `false` when another move (or adoption)
    /// of it is under way here.
    pub fn begin_transit(&self, id: ConnectionId) -> bool {
        self.in_transit.insert(id)
    }

    /// No longer holds `id` of another node (it closed, or moved on).
    pub fn forget_adopted(&self, id: &ConnectionId) {
        self.adopted.remove(id);
    }

    /// Whether `id` is moving between this node and another (operations on it wait).
    pub fn in_transit(&self, id: &ConnectionId) -> bool {
        self.in_transit.contains(id)
    }

    /// `id` is no longer moving (undoes [`Local::begin_transit`]).
    pub fn end_transit(&self, id: ConnectionId) {
        self.in_transit.remove(&id);
    }

    /// Listens to `groups` for a session arriving here, before it is their member (see
    /// [`Local::has_members`]); undone by [`Local::unhold`].
    pub fn hold(&self, groups: &[Arc<str>]) {
        for group in groups {
            *self.held.entry(group.clone()).or_default() += 1;
        }
    }

    /// Undoes one [`Local::hold`] of `groups`.
    pub fn unhold(&self, groups: &[Arc<str>]) {
        for group in groups {
            if let Some(mut count) = self.held.get_mut(group) {
                *count = count.saturating_sub(1);
            }
            self.held.remove_if(group, |_, count| *count == 0);
        }
    }

    /// Makes `handle` a member of `group` in the group index only (its own group list
    /// already names it): a session arriving here, from the point its old node stopped
    /// delivering the group's broadcasts to it.
    pub fn admit(&self, group: &str, handle: ConnHandle) {
        self.groups
            .entry(group.into())
            .or_default()
            .insert(handle.shared.info.id, handle);
    }

    /// Removes `id` from the index of `group` only (its own group list is kept): a session
    /// leaving this node, from the point its new node delivers the group's broadcasts.
    pub fn dismiss(&self, group: &str, id: &ConnectionId) {
        self.remove_member(group, id);
    }

    /// Queues a message for a local connection.
    pub fn post(&self, id: &ConnectionId, message: Message) -> Result<(), SendError> {
        self.registry.send(id, message)
    }

    /// Asks a local connection to close.
    pub fn close(&self, id: &ConnectionId, request: Close) -> Result<(), SendError> {
        let handle = self.registry.get(id).ok_or(SendError::Gone)?;
        handle.shared.request_close(request);
        Ok(())
    }

    /// A local connection's record and `lastActiveAt` (epoch ms).
    pub fn describe(&self, id: &ConnectionId) -> Option<(ConnectionRecord, i64)> {
        let handle = self.registry.get(id)?;
        let last = handle.shared.last_active_ms.load(Ordering::Relaxed) as i64;
        let mut record = ConnectionRecord::of(&handle.shared);
        record.status = handle.shared.resume.as_deref().map(|r| {
            if r.is_attached() {
                "connected"
            } else {
                "suspended"
            }
            .to_owned()
        });
        Some((record, last))
    }

    /// Adds a local connection to `group`; `Ok(false)` if it was already a member.
    ///
    /// The connection's own group list and the group index change under one lock (the
    /// list's mutex, then the index's shard: always in that order), and a connection that
    /// is closing is gone: so a join racing a leave or the connection's close can never
    /// leave the index holding a member the list does not (which nothing would remove).
    pub fn join(&self, group: &GroupName, id: &ConnectionId) -> Result<bool, SendError> {
        let handle = self.registry.get(id).ok_or(SendError::Gone)?;
        let name: Arc<str> = group.as_str().into();
        let mut joined = handle
            .shared
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if handle.shared.outbox.is_closed() {
            return Err(SendError::Gone);
        }
        if joined.iter().any(|g| **g == *name) {
            return Ok(false);
        }
        joined.push(name.clone());
        if let Some(resume) = &handle.shared.resume {
            resume.group_changed(&name, true);
        }
        self.groups
            .entry(name)
            .or_default()
            .insert(*id, handle.clone());
        Ok(true)
    }

    /// Removes a local connection from `group`; `Ok(false)` if it was not a member.
    pub fn leave(&self, group: &GroupName, id: &ConnectionId) -> Result<bool, SendError> {
        let handle = self.registry.get(id).ok_or(SendError::Gone)?;
        let mut joined = handle
            .shared
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = joined.len();
        joined.retain(|g| **g != *group.as_str());
        let was_member = before != joined.len();
        if was_member && let Some(resume) = &handle.shared.resume {
            resume.group_changed(group.as_str(), false);
        }
        self.remove_member(group.as_str(), id);
        Ok(was_member)
    }

    /// Removes a closing connection from every group; returns the groups it was in. Its
    /// outbox is closed first (by the caller), so no join can add it back meanwhile.
    pub fn leave_all(&self, shared: &ConnShared) -> Vec<Arc<str>> {
        let mut joined = shared.groups.lock().unwrap_or_else(|p| p.into_inner());
        let groups = std::mem::take(&mut *joined);
        for group in &groups {
            self.remove_member(group, &shared.info.id);
        }
        groups
    }

    fn remove_member(&self, group: &str, id: &ConnectionId) {
        let emptied = match self.groups.get_mut(group) {
            Some(mut members) => {
                members.remove(id);
                members.is_empty()
            }
            None => false,
        };
        if emptied {
            self.groups
                .remove_if(group, |_, members| members.is_empty());
        }
    }

    /// Queues `message` for every local member of `group` (or every local connection).
    /// The message's bytes are shared by all recipients.
    pub fn broadcast(&self, group: Option<&str>, message: &Message) -> Fanout {
        let mut fanout = Fanout::default();
        let mut send = |handle: &ConnHandle| match handle.try_send(message.clone()) {
            Ok(()) => fanout.delivered += 1,
            Err(SendError::Full) => fanout.dropped += 1,
            Err(SendError::Gone) => {}
        };
        match group {
            Some(group) => {
                if let Some(members) = self.groups.get(group) {
                    members.values().for_each(&mut send);
                }
            }
            None => self.registry.for_each(&mut send),
        }
        fanout
    }

    /// Local connections, in id order, after `cursor`.
    pub fn list_connections(&self, cursor: Option<&str>, limit: usize) -> Page<ConnectionRecord> {
        let mut records: Vec<ConnectionRecord> = self
            .registry
            .handles()
            .iter()
            .map(|h| ConnectionRecord::of(&h.shared))
            .filter(|r| cursor.is_none_or(|c| r.connection_id.as_str() > c))
            .collect();
        records.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        paginate(records, limit, |r| r.connection_id.clone())
    }

    /// Local members of `group`, in id order, after `cursor`.
    pub fn list_members(
        &self,
        group: &GroupName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Page<String> {
        let mut ids: Vec<String> = self
            .groups
            .get(group.as_str())
            .map(|m| m.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        ids.retain(|id| cursor.is_none_or(|c| id.as_str() > c));
        ids.sort();
        paginate(ids, limit, Clone::clone)
    }

    /// Whether this node wants `group`'s broadcasts: it has a member of it, or a session
    /// arriving here will be one ([`Local::hold`]).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|m| !m.is_empty()) || self.held.contains_key(group)
    }

    /// The groups this node wants broadcasts of (a member, or a session arriving).
    pub fn group_names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.groups.iter().map(|e| e.key().clone()).collect();
        names.extend(
            self.held
                .iter()
                .map(|e| e.key().clone())
                .filter(|g| !self.groups.contains_key(g)),
        );
        names
    }

    /// Every (group, member) pair held here (for resynchronising Redis).
    pub fn memberships(&self) -> Vec<(Arc<str>, ConnectionId)> {
        self.groups
            .iter()
            .flat_map(|e| {
                let group = e.key().clone();
                e.value()
                    .keys()
                    .map(move |id| (group.clone(), *id))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn paginate<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let cursor = if more { items.last().map(key) } else { None };
    Page { items, cursor }
}
