//! The in-memory backplane: one node, nothing remote. Every connection id names this node
//! or none, listings read the local registry, and a broadcast is the local fan-out alone.
//! There is no other node to tell about connections, so record writes are dropped.

use std::sync::Arc;

use super::{GroupName, Records};
use crate::connections::{ConnShared, ConnectionId};

/// The backplane of a single node.
#[derive(Debug, Default)]
pub struct MemoryBackplane;

impl Records for MemoryBackplane {
    fn connected(&self, _: &ConnShared) {}
    fn disconnected(&self, _: &ConnectionId, _: &[Arc<str>]) {}
    fn joined(&self, _: &GroupName, _: &ConnectionId) {}
    fn left(&self, _: &GroupName, _: &ConnectionId) {}
}
