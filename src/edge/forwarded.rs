//! The headers AWS adds to a handshake (`X-Forwarded-For`, `X-Forwarded-Port`,
//! `X-Forwarded-Proto`, `X-Amzn-Trace-Id`) and the client's real address, computed once
//! per handshake and presented to both the authorizer event and the CONNECT event.
//!
//! - `X-Forwarded-For`: what the client (or a load balancer) sent, then `, `, then the TCP
//!   peer's address; a direct client gets just its address.
//! - `identity.sourceIp`: the TCP peer, unless the peer is in `client.trusted_proxies`;
//!   then the rightmost `X-Forwarded-For` address that is not itself trusted (the
//!   leftmost when every one is; the nearest trusted one when the next is unreadable).
//! - `X-Forwarded-Port` / `X-Forwarded-Proto`: a trusted peer's values, else the client
//!   listener's port and `https` with `[client.tls]`, `http` without.
//! - `X-Amzn-Trace-Id`: the client's, else `Root=1-<8 hex epoch seconds>-<24 hex random>`.
//!
//! Pure: no clock, no randomness (the caller passes both), no I/O.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::IpRange;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Port`.
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Amzn-Trace-Id`.
pub const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// How the handshake reached the gateway.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client listener's local port.
    pub local_port: u16,
    /// Whether `[client.tls]` terminated TLS.
    pub tls: bool,
}

/// What the handshake presents: the client's address and the four headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `identity.sourceIp`.
    pub source_ip: IpAddr,
    /// `X-Forwarded-For`.
    pub forwarded_for: String,
    /// `X-Forwarded-Port`.
    pub port: String,
    /// `X-Forwarded-Proto`.
    pub proto: String,
    /// `X-Amzn-Trace-Id`.
    pub trace_id: String,
}

/// Computes what the handshake presents. `now_secs` and `random` make the
/// `X-Amzn-Trace-Id` when the client sent none.
pub fn forwarded(
    headers: &HeaderMap,
    transport: Transport,
    trusted: &[IpRange],
    now_secs: u64,
    random: [u8; 12],
) -> Forwarded {
    let peer_ip = transport.peer.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    let peer_trusted = is_trusted(peer_ip);

    let sent: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut forwarded_for = sent.join(", ");
    if !forwarded_for.is_empty() {
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer_ip.to_string());

    let source_ip = if peer_trusted {
        let mut source = peer_ip;
        for entry in sent.iter().rev() {
            match parse_forwarded_ip(entry) {
                Some(ip) => {
                    source = ip;
                    if !is_trusted(ip) {
                        break;
                    }
                }
                None => break,
            }
        }
        source
    } else {
        peer_ip
    };

    let from_proxy = |name: &HeaderName| peer_trusted.then(|| first_value(headers, name)).flatten();
    let port = from_proxy(&X_FORWARDED_PORT)
        .filter(|p| p.parse::<u16>().is_ok())
        .unwrap_or_else(|| transport.local_port.to_string());
    let proto = from_proxy(&X_FORWARDED_PROTO)
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| matches!(p.as_str(), "http" | "https"))
        .unwrap_or_else(|| if transport.tls { "https" } else { "http" }.to_owned());
    let trace_id = headers
        .get(&X_AMZN_TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map_or_else(|| amzn_trace_id(now_secs, random), str::to_owned);
    Forwarded {
        source_ip,
        forwarded_for,
        port,
        proto,
        trace_id,
    }
}

impl Forwarded {
    /// The handshake's headers as events present them: the client's, with the four
    /// replaced by the gateway's values (one each).
    pub fn present(&self, headers: &HeaderMap) -> HeaderMap {
        let mut presented = headers.clone();
        for (name, value) in [
            (X_FORWARDED_FOR, &self.forwarded_for),
            (X_FORWARDED_PORT, &self.port),
            (X_FORWARDED_PROTO, &self.proto),
            (X_AMZN_TRACE_ID, &self.trace_id),
        ] {
            // Every value was built from valid header text and addresses, so it is valid.
            if let Ok(value) = HeaderValue::from_str(value) {
                presented.insert(name, value);
            }
        }
        presented
    }
}

/// `Root=1-<8 hex epoch seconds>-<24 hex random>`, as AWS writes it.
pub fn amzn_trace_id(now_secs: u64, random: [u8; 12]) -> String {
    let mut id = format!("Root=1-{:08x}-", now_secs as u32);
    for b in random {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The first comma-separated element of a header's first value (the client-facing
/// proxy's view), trimmed.
fn first_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// An `X-Forwarded-For` element as an address: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]:5678`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 12] = [0xab; 12];

    fn transport(peer: &str, tls: bool) -> Transport {
        Transport {
            peer: peer.parse().unwrap(),
            local_port: 8080,
            tls,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    struct Case {
        name: &'static str,
        peer: &'static str,
        tls: bool,
        trusted: &'static [&'static str],
        sent: &'static [(&'static str, &'static str)],
        source_ip: &'static str,
        xff: &'static str,
        port: &'static str,
        proto: &'static str,
    }

    #[test]
    fn table() {
        let cases = [
            Case {
                name: "direct client",
                peer: "198.51.100.4:50000",
                tls: false,
                trusted: &[],
                sent: &[],
                source_ip: "198.51.100.4",
                xff: "198.51.100.4",
                port: "8080",
                proto: "http",
            },
            Case {
                name: "direct client over TLS",
                peer: "198.51.100.4:50000",
                tls: true,
                trusted: &[],
                sent: &[],
                source_ip: "198.51.100.4",
                xff: "198.51.100.4",
                port: "8080",
                proto: "https",
            },
            Case {
                name: "client sending a spoofed X-Forwarded-For",
                peer: "198.51.100.4:50000",
                tls: false,
                trusted: &["10.0.0.0/8"],
                sent: &[("x-forwarded-for", "1.1.1.1")],
                source_ip: "198.51.100.4",
                xff: "1.1.1.1, 198.51.100.4",
                port: "8080",
                proto: "http",
            },
            Case {
                name: "untrusted peer sending X-Forwarded-Proto and -Port",
                peer: "198.51.100.4:50000",
                tls: false,
                trusted: &[],
                sent: &[("x-forwarded-proto", "https"), ("x-forwarded-port", "443")],
                source_ip: "198.51.100.4",
                xff: "198.51.100.4",
                port: "8080",
                proto: "http",
            },
            Case {
                name: "trusted load balancer with a chain",
                peer: "10.0.0.2:40000",
                tls: false,
                trusted: &["10.0.0.0/8"],
                sent: &[
                    ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
                    ("x-forwarded-for", "10.0.0.9"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-port", "443"),
                ],
                source_ip: "203.0.113.7",
                xff: "1.1.1.1, 203.0.113.7, 10.0.0.9, 10.0.0.2",
                port: "443",
                proto: "https",
            },
            Case {
                name: "trusted load balancer, every hop trusted",
                peer: "10.0.0.2:40000",
                tls: false,
                trusted: &["10.0.0.0/8"],
                sent: &[("x-forwarded-for", "10.1.1.1, 10.0.0.9")],
                source_ip: "10.1.1.1",
                xff: "10.1.1.1, 10.0.0.9, 10.0.0.2",
                port: "8080",
                proto: "http",
            },
            Case {
                name: "trusted load balancer, unreadable hop",
                peer: "10.0.0.2:40000",
                tls: false,
                trusted: &["10.0.0.0/8"],
                sent: &[("x-forwarded-for", "203.0.113.7, unknown, 10.0.0.9")],
                source_ip: "10.0.0.9",
                xff: "203.0.113.7, unknown, 10.0.0.9, 10.0.0.2",
                port: "8080",
                proto: "http",
            },
            Case {
                name: "trusted proxy with ports and a bogus proto",
                peer: "[::ffff:127.0.0.1]:40000",
                tls: true,
                trusted: &["127.0.0.1"],
                sent: &[
                    ("x-forwarded-for", "[2001:db8::1]:1234"),
                    ("x-forwarded-proto", "gopher"),
                    ("x-forwarded-port", "99999"),
                ],
                source_ip: "2001:db8::1",
                xff: "[2001:db8::1]:1234, 127.0.0.1",
                port: "8080",
                proto: "https",
            },
        ];
        for case in cases {
            let got = forwarded(
                &headers(case.sent),
                transport(case.peer, case.tls),
                &ranges(case.trusted),
                0x6731_ebfc,
                RANDOM,
            );
            assert_eq!(got.source_ip.to_string(), case.source_ip, "{}", case.name);
            assert_eq!(got.forwarded_for, case.xff, "{}", case.name);
            assert_eq!(got.port, case.port, "{}", case.name);
            assert_eq!(got.proto, case.proto, "{}", case.name);
            assert_eq!(
                got.trace_id, "Root=1-6731ebfc-abababababababababababab",
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn keeps_the_clients_trace_id_and_presents_one_value_each() {
        let sent = headers(&[
            ("host", "gw.example"),
            (
                "x-amzn-trace-id",
                "Root=1-00000001-000000000000000000000001",
            ),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let got = forwarded(&sent, transport("127.0.0.1:1", false), &[], 0, RANDOM);
        assert_eq!(got.trace_id, "Root=1-00000001-000000000000000000000001");
        let presented = got.present(&sent);
        assert_eq!(presented["host"], "gw.example");
        assert_eq!(presented.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(presented[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(presented[&X_FORWARDED_PROTO], "http");
        assert_eq!(presented[&X_FORWARDED_PORT], "8080");
        assert_eq!(presented[&X_AMZN_TRACE_ID], got.trace_id.as_str());
    }
}
