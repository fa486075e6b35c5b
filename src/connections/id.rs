//! Connection and request ids: opaque, URL-safe, unguessable.
//!
//! A connection id is 12 bytes shown as 16 base64url characters (the length of AWS ids):
//! a 4-byte node tag followed by 8 random bytes (64 bits nobody can guess). The node tag
//! lets any node find the owner of a connection without asking Redis. Request and
//! message ids have the same shape with 12 random bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng as _, RngExt as _};

/// Bytes in an id.
const ID_BYTES: usize = 12;
/// Characters in an id's text form.
pub const ID_CHARS: usize = 16;

/// Identifies the node that owns a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NodeTag(pub [u8; 4]);

impl NodeTag {
    /// A random tag for a new node.
    pub fn random() -> Self {
        Self(rand::rng().random())
    }
}

impl fmt::Display for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A connection id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId([u8; ID_BYTES]);

impl ConnectionId {
    /// A fresh id owned by `node`.
    pub fn new(node: NodeTag) -> Self {
        let mut bytes = [0u8; ID_BYTES];
        bytes[..4].copy_from_slice(&node.0);
        rand::rng().fill_bytes(&mut bytes[4..]);
        Self(bytes)
    }

    /// Parses the 16-character text form; `None` if it is not a well-formed id.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != ID_CHARS {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut bytes).ok()?;
        (n == ID_BYTES).then_some(Self(bytes))
    }

    /// The node that owns this connection.
    pub fn node(&self) -> NodeTag {
        NodeTag([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_CHARS];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self})")
    }
}

/// A fresh request or message id (16 base64url characters, 96 random bits).
pub fn request_id() -> String {
    let bytes: [u8; ID_BYTES] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_node() {
        let node = NodeTag([1, 2, 3, 4]);
        let id = ConnectionId::new(node);
        let text = id.to_string();
        assert_eq!(text.len(), ID_CHARS);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let back = ConnectionId::parse(&text).expect("parses");
        assert_eq!(back, id);
        assert_eq!(back.node(), node);
    }

    #[test]
    fn ids_differ() {
        let node = NodeTag::random();
        assert_ne!(ConnectionId::new(node), ConnectionId::new(node));
        assert_ne!(request_id(), request_id());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "short",
            "AAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAA=",
            "AAAAAAAA+AAAAAAA",
            "AAAAAAAAAAAAAAA\u{e9}",
        ] {
            assert!(ConnectionId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
