//! The in-memory backplane: one node, nothing remote. Every connection id names this node
//! or none, listings read the local registry, and a broadcast is the local fan-out alone.

/// The backplane of a single node.
#[derive(Debug, Default)]
pub struct MemoryBackplane;
