//! W3C Trace Context (`traceparent`) for a connection: one trace id for its whole life,
//! taken from the handshake's `traceparent` when the client sent a valid one, and a
//! fresh span id on each outgoing call, so a backend's traces join the client's and the
//! gateway's logs (`trace_id` in the connection's spans).

use std::fmt;

use rand::RngExt as _;

/// A 16-byte W3C trace id (never all zeros).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 16] = rand::rng().random();
            if bytes != [0; 16] {
                return Self(bytes);
            }
        }
    }

    /// The trace id of a `traceparent` header value, when it is valid: version 00 exactly
    /// `00-<32 hex>-<16 hex>-<2 hex>`; a later version at least that, with anything after
    /// a further `-`; version `ff`, upper-case hex and all-zero ids are invalid.
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let version = hex::<1>(value.get(0..2)?)?;
        match version[0] {
            0xff => return None,
            0x00 if bytes.len() != 55 => return None,
            _ if bytes.len() > 55 && bytes[55] != b'-' => return None,
            _ => {}
        }
        let trace = hex::<16>(value.get(3..35)?)?;
        let parent = hex::<8>(value.get(36..52)?)?;
        hex::<1>(value.get(53..55)?)?;
        (trace != [0; 16] && parent != [0; 8]).then_some(Self(trace))
    }

    /// A record's hex form back to an id (`None` if malformed).
    pub fn parse_hex(text: &str) -> Option<Self> {
        hex::<16>(text).filter(|b| *b != [0; 16]).map(Self)
    }

    /// The `traceparent` of one call: `00-<trace id>-<span id>-01` (sampled).
    pub fn traceparent(&self, span_id: SpanId) -> String {
        format!("00-{self}-{span_id}-01")
    }

    /// The `traceparent` of one call, with a fresh span id.
    pub fn child_traceparent(&self) -> String {
        self.traceparent(SpanId::random())
    }
}

/// An 8-byte W3C span (parent) id, fresh for each outgoing call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl SpanId {
    /// A random span id (never all zeros).
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 8] = rand::rng().random();
            if bytes != [0; 8] {
                return Self(bytes);
            }
        }
    }
}

/// Lower-case hex of exactly `N` bytes.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let id = TraceId::from_traceparent(VALID).unwrap();
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId::from_traceparent(&format!(" {VALID} ")), Some(id));
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert_eq!(TraceId::from_traceparent(v1), Some(id));
    }

    #[test]
    fn refuses_invalid_traceparents() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(TraceId::from_traceparent(value), None, "{value:?}");
        }
    }

    #[test]
    fn formats_a_child_traceparent() {
        let id = TraceId::from_traceparent(VALID).unwrap();
        let span = SpanId([0xab, 0, 0, 0, 0, 0, 0, 0x01]);
        assert_eq!(
            id.traceparent(span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-ab00000000000001-01"
        );
        let child = id.child_traceparent();
        assert_eq!(TraceId::from_traceparent(&child), Some(id));
        assert_ne!(child, id.child_traceparent(), "a fresh span id per call");
        let random = TraceId::random();
        assert_eq!(TraceId::parse_hex(&random.to_string()), Some(random));
        assert_eq!(TraceId::parse_hex("zz"), None);
    }
}
