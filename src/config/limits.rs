//! `[limits]`: throttles (token buckets) and node-wide caps. Everything is off by default;
//! `docs/limits.md` lists each limit, its setting and what a client or caller sees.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, RouteSettings};

/// A token bucket's shape: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, fractions allowed; 0 turns the limit off.
    pub rate: f64,
    /// Requests that may arrive at once after a quiet spell; 0 means the rate rounded up.
    pub burst: u32,
}

impl Rate {
    /// Whether this limit is off.
    pub fn is_off(&self) -> bool {
        self.rate <= 0.0
    }

    /// The bucket's size: `burst`, or the rate rounded up (at least 1) when `burst` is 0.
    pub fn capacity(&self) -> u32 {
        if self.burst > 0 {
            self.burst
        } else {
            (self.rate.ceil() as u32).max(1)
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.rate.is_finite() || self.rate < 0.0 || self.rate > 1e9 {
            return Err(ConfigError::invalid(
                format!("{key}.rate"),
                "must be a number from 0 (off) to 1e9",
            ));
        }
        Ok(())
    }
}

/// `[limits]`: throttles and node-wide caps (all off by default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// Client messages per second across every connection of this node (AWS's account
    /// throttle). Over it: a `Too Many Requests` frame.
    pub messages: Rate,
    /// Each message route's own bucket, unless `routes` names the route (AWS's stage
    /// `DefaultRouteSettings`). Over it: a `Too Many Requests` frame.
    pub route_messages: Rate,
    /// Buckets for named routes (AWS's `RouteSettings`), e.g. `routes.sendmessage`.
    pub routes: BTreeMap<String, Rate>,
    /// Messages per second of one connection. Over it: a `Too Many Requests` frame.
    pub connection_messages: Rate,
    /// Messages per second of every connection sharing one API key. Over it: a
    /// `Too Many Requests` frame.
    pub api_key_messages: Rate,
    /// Successive throttled messages from one connection (with no message let through
    /// between them, all within `throttled_window_ms` of the first) before the gateway
    /// closes it with 1008; 0: never.
    pub close_after_throttled: u32,
    /// The window of `close_after_throttled`, in milliseconds.
    pub throttled_window_ms: u64,
    /// New connections per second on this node (AWS: 500/s). Over it: the upgrade gets 429.
    pub new_connections: Rate,
    /// Connections open at once on this node, handshakes in progress included (0: no
    /// limit). Over it: the upgrade gets 429.
    pub max_connections: usize,
    /// Management API requests per second of one caller (a bearer token, else the peer
    /// address). Over it: 429 `LimitExceededException`.
    pub management_requests: Rate,
    /// Integration calls in flight on this node, over all connections (0: no limit). At
    /// the cap a connection with a message to route stops reading until a call ends.
    pub max_inflight_per_node: usize,
    /// Most keys (API keys, management callers) tracked at once; see docs/limits.md.
    pub max_tracked_keys: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            messages: Rate::default(),
            route_messages: Rate::default(),
            routes: BTreeMap::new(),
            connection_messages: Rate::default(),
            api_key_messages: Rate::default(),
            close_after_throttled: 100,
            throttled_window_ms: 10_000,
            new_connections: Rate::default(),
            max_connections: 0,
            management_requests: Rate::default(),
            max_inflight_per_node: 0,
            max_tracked_keys: 10_000,
        }
    }
}

impl LimitsSettings {
    /// Checks ranges, and that `routes` names message routes that exist.
    pub fn validate(&self, routes: &BTreeMap<String, RouteSettings>) -> Result<(), ConfigError> {
        for (key, rate) in [
            ("limits.messages", &self.messages),
            ("limits.route_messages", &self.route_messages),
            ("limits.connection_messages", &self.connection_messages),
            ("limits.api_key_messages", &self.api_key_messages),
            ("limits.new_connections", &self.new_connections),
            ("limits.management_requests", &self.management_requests),
        ] {
            rate.validate(key)?;
        }
        for (route, rate) in &self.routes {
            let key = format!("limits.routes.{route}");
            if !routes.contains_key(route) {
                return Err(ConfigError::invalid(key, "no such route in [routes]"));
            }
            if matches!(route.as_str(), "$connect" | "$disconnect") {
                return Err(ConfigError::invalid(
                    key,
                    "only message routes have buckets (limit $connect with limits.new_connections)",
                ));
            }
            rate.validate(&key)?;
        }
        if self.close_after_throttled > 0 && self.throttled_window_ms == 0 {
            return Err(ConfigError::invalid(
                "limits.throttled_window_ms",
                "must be greater than 0 when limits.close_after_throttled is set",
            ));
        }
        if self.max_tracked_keys == 0 {
            return Err(ConfigError::invalid(
                "limits.max_tracked_keys",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, load};

    const BASE: &str = "[management]\nauth = \"none\"\n[routes.echo]\nintegration = \"m\"\n[integrations.m]\ntype = \"mock\"\n";

    #[test]
    fn parses_rates_and_route_buckets() {
        let text = format!(
            "{BASE}[limits]\nmessages = {{ rate = 100, burst = 50 }}\nmax_connections = 3\n[limits.routes.echo]\nrate = 0.5\n"
        );
        let s = load(ConfigSource::Text(&text), Vec::new()).expect("loads");
        assert_eq!(
            s.limits.messages,
            Rate {
                rate: 100.0,
                burst: 50
            }
        );
        assert_eq!(
            s.limits.routes["echo"],
            Rate {
                rate: 0.5,
                burst: 0
            }
        );
        assert_eq!(s.limits.routes["echo"].capacity(), 1);
        assert_eq!(s.limits.max_connections, 3);
        let env = vec![(
            "SWITCHBOARD__LIMITS__CONNECTION_MESSAGES__RATE".to_owned(),
            "7".to_owned(),
        )];
        let s = load(ConfigSource::Text(BASE), env).expect("loads");
        assert_eq!(s.limits.connection_messages.rate, 7.0);
        assert_eq!(s.limits.connection_messages.capacity(), 7);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[limits]\nmessages = { rate = -1 }\n",
                "limits.messages.rate",
            ),
            ("[limits.routes.nope]\nrate = 1\n", "limits.routes.nope"),
            (
                "[limits]\nnew_connections = { rate = 1, size = 2 }\n",
                "limits.new_connections",
            ),
            (
                "[limits]\nclose_after_throttled = 3\nthrottled_window_ms = 0\n",
                "limits.throttled_window_ms",
            ),
            (
                "[limits]\nmax_tracked_keys = 0\n",
                "limits.max_tracked_keys",
            ),
        ];
        for (extra, key) in cases {
            let text = format!("{BASE}{extra}");
            let err = load(ConfigSource::Text(&text), Vec::new())
                .expect_err(extra)
                .to_string();
            assert!(
                err.contains(key),
                "error for {extra:?} should name {key}: {err}"
            );
        }
    }
}
