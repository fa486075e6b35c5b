//! Connections as every layer above sees them: ids ([`id`]), what the handshake and the
//! authorizer established ([`info`]), how a connection closes ([`close`]), its bounded
//! outbound queue ([`outbox`]), the local registry ([`registry`]) and the W3C trace id
//! every call made for it carries ([`trace`]), and a resumable session's token, offsets
//! and history ([`resume`]).
//!
//! A handle is shared metadata, the connection's outbound queue ([`Outbox`]) and a close
//! request; it never holds the socket (the session task owns that). The outbox's wake-up is
//! the session's only signal from outside: a queued frame or a close request, and both
//! are checked with atomics, no lock, each time it runs. Every queue is bounded
//! twice, in messages and in bytes: a send that would cross either bound fails with
//! [`SendError::Full`] and the caller answers 429. Map guards are never held
//! across an `.await`: lookups clone the handle out.

pub mod close;
pub mod id;
pub mod info;
pub mod outbox;
pub mod registry;
pub mod resume;
pub mod trace;

pub use close::Close;
pub use id::{ConnectionId, NodeTag};
pub use info::{AuthorizerContext, ConnInfo};
pub use outbox::{Outbox, SendError};
pub use registry::{ConnHandle, ConnShared, Registry};
pub use trace::TraceId;

/// Milliseconds since the epoch: the clock of `connectedAt`, `lastActiveAt` and events.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
