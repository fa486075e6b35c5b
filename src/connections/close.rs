//! How a connection closes: one code with its reason, whoever asked (a DELETE, draining,
//! shutdown, a limit, the client) and whatever reports it (the close frame, `$disconnect`,
//! the access log).

/// A close code with its reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The code.
    pub code: u16,
    /// The reason (at most 123 bytes when sent).
    pub reason: String,
}

impl Close {
    /// A close from a code and reason.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// 1000, as AWS reports a DELETE.
    pub fn normal() -> Self {
        Self::new(1000, "Connection Closed Normally")
    }
    /// 1001: idle timeout, maximum lifetime, shutdown.
    pub fn going_away() -> Self {
        Self::new(1001, "Going away")
    }
    /// 1005: the client's close frame had no status (reported, never sent).
    pub fn no_status() -> Self {
        Self::new(1005, "Client-side close frame status not set")
    }
    /// 1006: the connection dropped without a close handshake (reported, never sent).
    pub fn abnormal(reason: &str) -> Self {
        Self::new(1006, reason)
    }
    /// 1003: a binary frame when binary frames are rejected.
    pub fn unsupported_binary() -> Self {
        Self::new(1003, "Binary frames are not supported")
    }
    /// 1009: a message over the size or fragment limits.
    pub fn too_big() -> Self {
        Self::new(1009, "Message too big")
    }
}

/// Close reasons are at most 123 bytes; cut on a character boundary.
pub fn truncate_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether a server may send `code` in a close frame (RFC 6455 §7.4).
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1009 | 1011..=1014 | 3000..=4999)
}
