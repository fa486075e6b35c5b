//! API keys on `$connect`: the key comes from the `x-api-key` header or from the HTTP
//! authorizer's `usageIdentifierKey` (AWS's two `ApiKeySelectionExpression`s). A missing or
//! unknown key is refused with 403.
//!
//! Each key may carry a rate limit (a [`TokenBucket`] of `rate_per_sec` refilling up to
//! `burst`: the crate's one bucket, shared with `throttle`) and a daily quota (a counter of
//! connections per UTC day); over either, the handshake gets 429. Both count connections
//! opened with the key on this node — in a cluster each node counts its own. Keys are
//! looked up by their SHA-256 digest, so the table holds no key text and a lookup does not
//! compare key bytes one by one.

use std::collections::HashMap;
use std::sync::Mutex;

use ring::digest;
use tokio::time::Instant;
use tracing::debug;

use super::Refusal;
use crate::bucket::TokenBucket;
use crate::config::{ApiKeySettings, Rate};

/// Where the key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `$request.header.x-api-key`.
    Header,
    /// `$context.authorizer.usageIdentifierKey`.
    Authorizer,
}

/// Counters of one key. A std mutex: held for a few arithmetic operations, never across an
/// `.await`.
#[derive(Debug)]
struct Usage {
    /// The key's rate limit (`None`: the key has no rate).
    bucket: Option<TokenBucket>,
    /// The UTC day (days since the epoch) `used_today` counts.
    day: i64,
    /// Connections opened on `day`.
    used_today: u64,
}

/// One configured key.
#[derive(Debug)]
struct Key {
    name: String,
    daily_quota: u64,
    usage: Mutex<Usage>,
}

impl Key {
    /// Takes one connection from the bucket and the quota, or says which is exhausted.
    fn take(&self, now: Instant, today: i64) -> Result<(), &'static str> {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if usage.day != today {
            usage.day = today;
            usage.used_today = 0;
        }
        if self.daily_quota > 0 && usage.used_today >= self.daily_quota {
            return Err("daily quota exhausted");
        }
        if usage.bucket.as_mut().is_some_and(|b| !b.try_take(now)) {
            return Err("rate limit exceeded");
        }
        usage.used_today += 1;
        Ok(())
    }
}

/// The configured keys.
#[derive(Debug)]
pub struct ApiKeys {
    source: Source,
    by_digest: HashMap<[u8; 32], Key>,
}

fn sha256(text: &str) -> [u8; 32] {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

/// Days since the Unix epoch, UTC.
fn utc_day() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

impl ApiKeys {
    /// The keys of validated settings.
    pub fn new(settings: &ApiKeySettings) -> Self {
        let source = if settings.selection_expression == "$context.authorizer.usageIdentifierKey" {
            Source::Authorizer
        } else {
            Source::Header
        };
        let now = Instant::now();
        let by_digest = settings
            .keys
            .iter()
            .map(|(name, entry)| {
                // Burst 0 means the rate rounded up, as for `[limits]` rates.
                let rate = Rate {
                    rate: entry.rate_per_sec,
                    burst: entry.burst,
                };
                (
                    sha256(entry.value.expose()),
                    Key {
                        name: name.clone(),
                        daily_quota: entry.daily_quota,
                        usage: Mutex::new(Usage {
                            bucket: (!rate.is_off())
                                .then(|| TokenBucket::new(rate.rate, rate.capacity(), now)),
                            day: utc_day(),
                            used_today: 0,
                        }),
                    },
                )
            })
            .collect();
        Self { source, by_digest }
    }

    /// Where keys are read.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Checks the presented key; returns its name.
    pub fn check(&self, presented: Option<&str>) -> Result<&str, Refusal> {
        let presented = presented
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Refusal::forbidden("API key missing"))?;
        let key = self
            .by_digest
            .get(&sha256(presented))
            .ok_or_else(|| Refusal::forbidden("API key unknown"))?;
        key.take(Instant::now(), utc_day())
            .map_err(|why| Refusal::limited(format!("API key {}: {why}", key.name)))?;
        debug!(api_key = %key.name, "API key accepted");
        Ok(&key.name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::{ApiKeyEntry, Secret};

    fn keys(rate: f64, burst: u32, quota: u64) -> ApiKeys {
        ApiKeys::new(&ApiKeySettings {
            required: true,
            selection_expression: "$request.header.x-api-key".into(),
            keys: BTreeMap::from([(
                "mobile".to_owned(),
                ApiKeyEntry {
                    value: Secret::new("key-mobile-0123456789"),
                    rate_per_sec: rate,
                    burst,
                    daily_quota: quota,
                },
            )]),
        })
    }

    #[test]
    fn missing_and_unknown_keys_are_forbidden() {
        let k = keys(0.0, 0, 0);
        assert_eq!(k.check(None).unwrap_err().status, 403);
        assert_eq!(k.check(Some("")).unwrap_err().status, 403);
        assert_eq!(
            k.check(Some("key-other-0123456789")).unwrap_err().status,
            403
        );
        assert_eq!(k.check(Some("key-mobile-0123456789")).unwrap(), "mobile");
    }

    #[test]
    fn bucket_limits_and_refills() {
        let k = keys(2.0, 2, 0);
        let key = k.by_digest.values().next().unwrap();
        let start = Instant::now();
        let day = utc_day();
        assert!(key.take(start, day).is_ok());
        assert!(key.take(start, day).is_ok());
        assert_eq!(key.take(start, day), Err("rate limit exceeded"));
        // Half a second at 2/s refills one token.
        let later = start + Duration::from_millis(500);
        assert!(key.take(later, day).is_ok());
        assert!(key.take(later, day).is_err());
    }

    #[test]
    fn quota_resets_each_day() {
        let k = keys(0.0, 0, 2);
        let key = k.by_digest.values().next().unwrap();
        let now = Instant::now();
        assert!(key.take(now, 100).is_ok());
        assert!(key.take(now, 100).is_ok());
        assert_eq!(key.take(now, 100), Err("daily quota exhausted"));
        assert!(key.take(now, 101).is_ok());
        let refused = k.check(Some("key-mobile-0123456789"));
        // Today is not day 101, so the count restarted.
        assert!(refused.is_ok());
    }
}
