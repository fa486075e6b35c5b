//! Token buckets by key (API key, route, management caller), bounded in how many keys
//! they track.
//!
//! A key's bucket is made full on first use. The map holds at most `max_keys` buckets;
//! when it is full, buckets that have refilled completely are forgotten (a full bucket is
//! the same as a new one, so nothing is lost), at most once a second. If every tracked
//! key is still busy, a new key shares one overflow bucket with the other untracked keys:
//! memory stays bounded however many keys a caller invents, and the untracked keys
//! together get one key's rate.

use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{bucket_for, made_for};
use crate::bucket::TokenBucket;
use crate::config::Rate;

/// How often a full map may be swept for forgettable buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Token buckets by key, at most `max_keys` of them.
#[derive(Debug)]
pub struct KeyedBuckets<K: Hash + Eq> {
    /// The rate of a key that has no rate of its own.
    rate: Rate,
    /// Most keys tracked at once.
    max_keys: usize,
    /// Sharded so callers on different cores rarely contend; no guard is held across an
    /// `.await` (nothing here awaits).
    buckets: DashMap<K, TokenBucket>,
    /// Shared by keys that found the map full (see the module docs).
    overflow: Mutex<Option<TokenBucket>>,
    /// When the map was last swept; sweeps are at most once per [`SWEEP_EVERY`].
    last_sweep: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    /// Buckets at `rate` for every key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: DashMap::new(),
            overflow: Mutex::new(None),
            last_sweep: Mutex::new(None),
        }
    }

    /// Takes a token from `key`'s bucket at the default rate; `false` means throttled.
    /// Always `true` when the default rate is off.
    pub fn try_take(&self, key: &K, now: Instant) -> bool {
        self.try_take_at(key, self.rate, now)
    }

    /// Takes a token from `key`'s bucket at `rate` (a key with its own limit, such as an
    /// API key configured with a rate); `false` means throttled. A rate that is off always
    /// grants. When `rate` differs from the one the key's bucket was made with, the bucket
    /// starts again, full, at the new rate.
    pub fn try_take_at(&self, key: &K, rate: Rate, now: Instant) -> bool {
        if rate.is_off() {
            return true;
        }
        if let Some(mut bucket) = self.buckets.get_mut(key) {
            if !made_for(&bucket, rate) {
                *bucket = bucket_for(rate, now);
            }
            return bucket.try_take(now);
        }
        if self.buckets.len() >= self.max_keys {
            self.sweep(now);
        }
        if self.buckets.len() >= self.max_keys {
            let mut overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            let bucket = overflow.get_or_insert_with(|| bucket_for(rate, now));
            return bucket.try_take(now);
        }
        let mut bucket = self
            .buckets
            .entry(key.clone())
            .or_insert_with(|| bucket_for(rate, now));
        bucket.try_take(now)
    }

    /// Number of keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets full buckets, at most once per [`SWEEP_EVERY`].
    fn sweep(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
                return;
            }
            *last = Some(now);
        }
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        rate: 1.0,
        burst: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_bucket() {
        let buckets = KeyedBuckets::new(R, 10);
        let now = Instant::now();
        let granted = |key: &str| {
            (0..5)
                .filter(|_| buckets.try_take(&key.to_owned(), now))
                .count()
        };
        assert_eq!(granted("a"), 2);
        assert_eq!(granted("b"), 2);
        assert_eq!(granted("a"), 0);
        assert_eq!(buckets.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_may_have_its_own_rate() {
        let buckets = KeyedBuckets::new(R, 10);
        let now = Instant::now();
        let fast = Rate {
            rate: 10.0,
            burst: 4,
        };
        let granted = (0..9)
            .filter(|_| buckets.try_take_at(&1, fast, now))
            .count();
        assert_eq!(granted, 4);
        let off = Rate::default();
        assert!((0..100).all(|_| buckets.try_take_at(&2, off, now)));
        // The default rate applies to other keys.
        assert_eq!((0..9).filter(|_| buckets.try_take(&3, now)).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_off_rate_grants_everything_and_tracks_nothing() {
        let buckets = KeyedBuckets::new(Rate::default(), 10);
        let now = Instant::now();
        assert!((0..1000).all(|i| buckets.try_take(&i, now)));
        assert!(buckets.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_and_shares_an_overflow_bucket() {
        let buckets = KeyedBuckets::new(R, 3);
        let now = Instant::now();
        for key in 0..3 {
            assert!(buckets.try_take(&key, now));
        }
        // Keys 3.. share one overflow bucket of burst 2.
        let granted = (3..100).filter(|key| buckets.try_take(key, now)).count();
        assert_eq!(granted, 2);
        assert_eq!(buckets.len(), 3);
        // Once the tracked buckets refill they are forgotten and new keys get their own.
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        assert_eq!((0..5).filter(|_| buckets.try_take(&7, now)).count(), 2);
        assert_eq!(buckets.len(), 1);
    }
}
