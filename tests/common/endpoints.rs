//! [`Endpoints`]: what a test talks to — the client and management addresses of a gateway
//! and an HTTP client for the management API. `client.rs` (WebSocket clients) and
//! `management.rs` (management requests) are written once against it; a gateway process
//! ([`super::Gateway`]) and an in-process gateway ([`super::InProcess`]) both deref to it,
//! so `gw.connect_with_id()` or `gw.post(..)` read the same whichever runs the test.

use std::net::SocketAddr;

/// The two listeners of a running gateway, and an HTTP client for the management one
/// (cloned, for a task that calls the gateway while the test does).
#[derive(Clone)]
pub struct Endpoints {
    /// Address of the WebSocket listener.
    pub client_addr: SocketAddr,
    /// Address of the management listener.
    pub management_addr: SocketAddr,
    /// One client for every management request (keeps connections alive between calls).
    pub(super) http: reqwest::Client,
}

impl Endpoints {
    /// Endpoints of a gateway listening on these addresses.
    pub(super) fn new(client_addr: SocketAddr, management_addr: SocketAddr) -> Self {
        Self {
            client_addr,
            management_addr,
            http: reqwest::Client::new(),
        }
    }
}
