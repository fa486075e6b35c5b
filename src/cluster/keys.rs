//! Redis key and channel names. Every key that belongs to one node or one group carries
//! that node or group in a hash tag (`{…}`), so on Redis Cluster a node's keys live in one
//! slot and multi-key commands on them stay legal.
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `<p>:nodes` | sorted set | node tag → last lease refresh (ms) |
//! | `<p>:{n.<tag>}:lease` | string with TTL | the node's lease; gone = node dead |
//! | `<p>:{n.<tag>}:conns` | hash | connection id → record JSON (for listing and reaping) |
//! | `<p>:{n.<tag>}:ids` | sorted set, scores 0 | the node's connection ids, in id order (listing pages) |
//! | `<p>:{n.<tag>}:memberships` | set | `group\tconnectionId` for the node's connections |
//! | `<p>:{n.<tag>}:reaper` | string with TTL | which survivor is cleaning up a dead node (or, after a graceful shutdown, the node itself: nobody reaps it) |
//! | `<p>:{n.<tag>}:version` | integer | bumped by every write to the node's records, so survivors re-read them only when they changed |
//! | `<p>:{g.<group>}:members` | sorted set, scores 0 | connection ids in the group, cluster-wide, in id order |
//! | `<p>:{g.<group>}:subscribers` | set | tags of the nodes subscribed to the group's channel (a broadcast is refused while one of them is not) |
//! | `<p>:{all}:subscribers` | set | tags of the nodes subscribed to the broadcast channel |
//! | `<p>:{s.<id>}:session` | hash with TTL | a resumable session: `secret`, `record` (JSON), `owner` (node tag), `g:<group>` per group |
//! | `<p>:{s.<id>}:history` | stream with TTL | its frames, entry id `<offset>-0`, field `t` (text) or `b` (binary) |
//! | channel `<p>:{n.<tag>}:inbox` | pub/sub | requests to, and replies for, the node |
//! | channel `<p>:{all}:bcast` | pub/sub | broadcasts to every connection, one publish reaching every node |
//! | channel `<p>:{g.<group>}:bcast` | pub/sub | broadcasts to a group, reaching the nodes that hold a member |
//!
//! A channel shares its hash tag with the keys it goes with, so on a Redis Cluster sharded
//! pub/sub (`SSUBSCRIBE`/`SPUBLISH`) puts it in their slot, and the script that checks a
//! subscriber set and publishes touches one slot.

use crate::connections::NodeTag;

/// Builds names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    /// The set of known nodes.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// A node's lease.
    pub fn lease(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:lease", self.prefix)
    }
    /// A node's connection records.
    pub fn conns(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:conns", self.prefix)
    }
    /// A node's connection ids, ordered (all scores 0) for paging.
    pub fn ids(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:ids", self.prefix)
    }
    /// A node's group memberships.
    pub fn memberships(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:memberships", self.prefix)
    }
    /// The claim on cleaning up a dead node.
    pub fn reaper(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:reaper", self.prefix)
    }
    /// The version of a node's records (bumped by every write to them).
    pub fn version(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:version", self.prefix)
    }
    /// A group's members.
    pub fn members(&self, group: &str) -> String {
        format!("{}:{{g.{group}}}:members", self.prefix)
    }
    /// A node's inbox channel.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}:{{n.{node}}}:inbox", self.prefix)
    }
    /// The broadcast channel (to every connection).
    pub fn broadcast(&self) -> String {
        format!("{}:{{all}}:bcast", self.prefix)
    }
    /// The nodes subscribed to the broadcast channel.
    pub fn broadcast_subscribers(&self) -> String {
        format!("{}:{{all}}:subscribers", self.prefix)
    }
    /// The nodes subscribed to a group's channel.
    pub fn group_subscribers(&self, group: &str) -> String {
        format!("{}:{{g.{group}}}:subscribers", self.prefix)
    }
    /// A group's broadcast channel.
    pub fn group_channel(&self, group: &str) -> String {
        format!("{}:{{g.{group}}}:bcast", self.prefix)
    }
    /// The group whose broadcast channel `channel` is (`None` for any other channel).
    pub fn group_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{g.")?
            .strip_suffix("}:bcast")
    }
    /// A resumable session's state: its secret, record, groups and owner (a hash).
    pub fn session(&self, id: &str) -> String {
        format!("{}:{{s.{id}}}:session", self.prefix)
    }
    /// A resumable session's history (a stream whose entry ids are `<offset>-0`).
    pub fn session_history(&self, id: &str) -> String {
        format!("{}:{{s.{id}}}:history", self.prefix)
    }
}

/// A node tag's text form, as used in keys.
pub fn tag(node: NodeTag) -> String {
    node.to_string()
}

/// A membership entry: `group\tconnectionId` (group names cannot contain a tab).
pub fn membership(group: &str, conn: &str) -> String {
    format!("{group}\t{conn}")
}
