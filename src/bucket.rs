//! The token bucket: `per_second` tokens a second flow into a bucket that holds at most
//! `capacity`; each request takes one, and a request that finds the bucket empty is
//! throttled.
//!
//! Shared by [`crate::throttle`] (message, connection and management limits) and
//! [`crate::auth`] (API-key connection rates). Those two are siblings on one layer and
//! must not import each other, so the bucket lives here, below both: a leaf that imports
//! nothing of the crate (not even `config::Rate` — callers pass a rate and a capacity), so
//! any layer may use it. Limit policy (which limits exist, what a refusal means, how a
//! burst of 0 is read) stays with its callers.
//!
//! Pure: the caller passes the time (`tokio::time::Instant`, so tests drive it with paused
//! time), and nothing here locks, sleeps or allocates.

use std::time::Duration;

use tokio::time::Instant;

/// Slack for floating-point sums: 0.9 + 0.1 tokens must make one.
const EPSILON: f64 = 1e-9;

/// One token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    per_second: f64,
    /// Most tokens the bucket holds (the burst).
    capacity: f64,
    /// Tokens in the bucket at `updated`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilling at `per_second` (which must be above
    /// 0: a limit that is off has no bucket).
    ///
    /// ```
    /// use switchboard::bucket::TokenBucket;
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let mut bucket = TokenBucket::new(1.0, 2, now);
    /// assert!(bucket.try_take(now) && bucket.try_take(now));
    /// assert!(!bucket.try_take(now));
    /// ```
    pub fn new(per_second: f64, capacity: u32, now: Instant) -> Self {
        let capacity = f64::from(capacity);
        Self {
            per_second,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes a token if there is one; `false` means throttled.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full at `now` (a full bucket behaves exactly like a new one,
    /// so a keyed map may forget it).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) >= self.capacity - EPSILON
    }

    /// How long until a token is available (zero when one is).
    pub fn wait(&self, now: Instant) -> Duration {
        let missing = 1.0 - EPSILON - self.level(now);
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.per_second)
        }
    }

    /// Whether this bucket was made with `per_second` and `capacity` (a changed limit
    /// needs a new bucket).
    pub fn has_shape(&self, per_second: f64, capacity: u32) -> bool {
        self.per_second == per_second && self.capacity == f64::from(capacity)
    }

    fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * self.per_second).min(self.capacity)
    }

    fn refill(&mut self, now: Instant) {
        // A time before `updated` (another thread's older reading) adds nothing.
        if now > self.updated {
            self.tokens = self.level(now);
            self.updated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each step: advance the clock by `after_ms`, then try to take `takes` tokens; the
    /// number granted must be `granted`.
    struct Step {
        after_ms: u64,
        takes: u32,
        granted: u32,
    }

    const fn step(after_ms: u64, takes: u32, granted: u32) -> Step {
        Step {
            after_ms,
            takes,
            granted,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn grants_the_capacity_then_the_rate() {
        let cases: &[(&str, (f64, u32), &[Step])] = &[
            (
                "capacity then empty",
                (10.0, 5),
                &[step(0, 8, 5), step(0, 1, 0)],
            ),
            (
                "refills at the rate",
                (10.0, 5),
                &[
                    step(0, 5, 5),
                    step(100, 2, 1),
                    step(250, 3, 2),
                    step(49, 1, 0),
                ],
            ),
            (
                "never holds more than its capacity",
                (10.0, 5),
                &[step(0, 5, 5), step(60_000, 10, 5)],
            ),
            (
                "fractional rate",
                (0.5, 1),
                &[step(0, 2, 1), step(1_000, 1, 0), step(1_000, 1, 1)],
            ),
            (
                "fractional rate, larger capacity",
                (2.5, 3),
                &[step(0, 4, 3), step(400, 2, 1)],
            ),
            (
                "slow rate holding one",
                (0.1, 1),
                &[step(0, 2, 1), step(9_000, 1, 0), step(1_000, 1, 1)],
            ),
            (
                "steady rate is never throttled",
                (100.0, 1),
                &[
                    step(0, 1, 1),
                    step(10, 1, 1),
                    step(10, 1, 1),
                    step(10, 1, 1),
                ],
            ),
        ];
        for (name, (per_second, capacity), steps) in cases {
            let mut bucket = TokenBucket::new(*per_second, *capacity, Instant::now());
            for (i, s) in steps.iter().enumerate() {
                tokio::time::advance(Duration::from_millis(s.after_ms)).await;
                let now = Instant::now();
                let granted = (0..s.takes).filter(|_| bucket.try_take(now)).count() as u32;
                assert_eq!(granted, s.granted, "{name}: step {i}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_fullness_and_wait() {
        let mut bucket = TokenBucket::new(4.0, 2, Instant::now());
        let t0 = Instant::now();
        assert!(bucket.is_full(t0));
        assert_eq!(bucket.wait(t0), Duration::ZERO);
        assert!(bucket.try_take(t0) && bucket.try_take(t0));
        assert!(!bucket.is_full(t0));
        assert_eq!(bucket.wait(t0), Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.is_full(Instant::now()));
        assert!(bucket.has_shape(4.0, 2));
        assert!(!bucket.has_shape(4.0, 3));
        assert!(!bucket.has_shape(2.0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_reading_adds_nothing() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 1, t1);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t1));
    }
}
