//! Address ranges in settings (`client.trusted_proxies`): an IP address or a CIDR block,
//! parsed when the file is read, so a bad entry is refused with its key named.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An IP address (`10.0.0.7`, `::1`) or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` lies in the range. An IPv4-mapped IPv6 address (`::ffff:10.0.0.7`, as
    /// a dual-stack listener reports IPv4 peers) matches the IPv4 range and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        // A mapped IPv4 address is written as its IPv4 form, so `contains` compares like
        // with like.
        let mapped = network.is_ipv6() && network.to_canonical().is_ipv4();
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => {
                let p: u8 = p
                    .parse()
                    .ok()
                    .filter(|p| *p <= if mapped { 128 } else { bits })
                    .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{bits}"))?;
                if mapped { p.saturating_sub(96) } else { p }
            }
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> IpRange {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn single_addresses_and_blocks() {
        assert!(r("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!r("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(r("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!r("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(r("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(r("fd00::/8").contains(ip("fd12::1")));
        assert!(!r("fd00::/8").contains(ip("fe80::1")));
        assert!(r("::1").contains(ip("::1")));
        assert!(!r("10.0.0.0/8").contains(ip("::1")));
    }

    #[test]
    fn mapped_addresses_match_ipv4_ranges() {
        assert!(r("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(r("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert_eq!(r("::ffff:10.0.0.0/104"), r("10.0.0.0/8"));
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "1.2.3.4/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad:?}");
        }
    }
}
