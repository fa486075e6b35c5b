//! Measurement helpers: latency histograms in microseconds (HdrHistogram), their JSON
//! summary in milliseconds, a sharded histogram many reader tasks record into, and the
//! timestamped payloads whose delivery latency the readers measure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest recordable latency: 10 minutes in microseconds (larger values are clamped).
const MAX_US: u64 = 600_000_000;

/// The process's clock origin: timestamps in payloads are nanoseconds since it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since this process's [`EPOCH`].
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// An empty latency histogram (1 µs .. 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Records `us` microseconds, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_US));
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `{"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"}`.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "mean_ms": h.mean().round() / 1000.0,
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// A histogram behind 16 locks, so thousands of reader tasks on several threads can record
/// without queueing on one.
pub struct SharedHist {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for SharedHist {
    fn default() -> Self {
        SharedHist {
            shards: (0..16).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl SharedHist {
    /// Records `us` in the shard chosen by `key` (a reader's index).
    pub fn record(&self, key: usize, us: u64) {
        let mut shard = self.shards[key % self.shards.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        record(&mut shard, us);
    }

    /// All shards added up.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*shard);
        }
        all
    }
}

/// The kind of a timestamped payload that is a POST /@connections message, not a broadcast.
pub const KIND_POST: u32 = u32::MAX;

/// `{"t":<ns since EPOCH>,"k":<kind>,"pad":"…"}` padded with `pad` bytes.
pub fn stamp(kind: u32, pad: usize) -> String {
    format!(
        "{{\"t\":{},\"k\":{kind},\"pad\":\"{}\"}}",
        now_ns(),
        "x".repeat(pad)
    )
}

/// The (timestamp, kind) of a [`stamp`] payload, read without a JSON parser (fan-out
/// readers see hundreds of thousands per second).
pub fn parse_stamp(text: &str) -> Option<(u64, u32)> {
    let rest = text.strip_prefix("{\"t\":")?;
    let end = rest.find(',')?;
    let t = rest[..end].parse().ok()?;
    let rest = rest[end..].strip_prefix(",\"k\":")?;
    let end = rest.find([',', '}'])?;
    let k = rest[..end].parse().ok()?;
    Some((t, k))
}

/// Deliveries of one kind: a latency histogram, a count and the latest arrival.
#[derive(Default)]
pub struct Arrivals {
    /// Delivery latency (µs).
    pub latency: SharedHist,
    /// Messages received.
    pub count: AtomicU64,
    /// Largest latency seen (µs): for a broadcast, when its last copy arrived.
    pub max_us: AtomicU64,
}

impl Arrivals {
    /// Records one delivery sent at `sent_ns`.
    pub fn arrived(&self, reader: usize, sent_ns: u64) {
        let us = now_ns().saturating_sub(sent_ns) / 1000;
        self.latency.record(reader, us);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Messages received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Everything the member readers of a scenario saw: POSTed messages, each broadcast by
/// index, and anything unexpected.
pub struct Deliveries {
    /// Messages sent with POST /@connections.
    pub posts: Arrivals,
    /// Broadcast number `k` (payload kind `k`).
    pub broadcasts: Vec<Arrivals>,
    /// Frames that were not a stamp of a known kind.
    pub unexpected: AtomicU64,
}

impl Deliveries {
    /// Room for `broadcasts` broadcasts.
    pub fn new(broadcasts: usize) -> Self {
        Deliveries {
            posts: Arrivals::default(),
            broadcasts: (0..broadcasts).map(|_| Arrivals::default()).collect(),
            unexpected: AtomicU64::new(0),
        }
    }

    /// Files one received text frame.
    pub fn received(&self, reader: usize, text: &str) {
        match parse_stamp(text) {
            Some((t, KIND_POST)) => self.posts.arrived(reader, t),
            Some((t, k)) if (k as usize) < self.broadcasts.len() => {
                self.broadcasts[k as usize].arrived(reader, t)
            }
            _ => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One measured series (a server in one round, or several rounds merged): latencies,
/// errors and the time it took.
pub struct Sample {
    /// Latency of every successful operation (µs).
    pub hist: Histogram<u64>,
    /// Failed operations.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Seconds spent measuring (summed over rounds).
    pub elapsed: f64,
    /// Whether a phase hit `--max-secs`.
    pub timed_out: bool,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            hist: histogram(),
            errors: 0,
            first_error: None,
            elapsed: 0.0,
            timed_out: false,
        }
    }
}

impl Sample {
    /// Counts a failed operation (the first one is kept for the report).
    pub fn error(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    /// Adds the samples of concurrent workers (their `elapsed` is left to the caller).
    pub async fn gather(workers: Vec<tokio::task::JoinHandle<Sample>>) -> anyhow::Result<Sample> {
        let mut all = Sample::default();
        for worker in workers {
            all.absorb(worker.await?);
        }
        Ok(all)
    }

    /// Adds another round's sample to this one.
    pub fn absorb(&mut self, other: Sample) {
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        self.timed_out |= other.timed_out;
    }

    /// `{count_key, "errors", "first_error", "timed_out", "elapsed_s", rate_key, "latency"}`.
    pub fn json(&self, count_key: &str, rate_key: &str) -> Value {
        let mut v = json!({
            "errors": self.errors,
            "first_error": self.first_error,
            "timed_out": self.timed_out,
            "elapsed_s": round2(self.elapsed),
            "latency": summary(&self.hist),
        });
        v[count_key] = json!(self.hist.len());
        v[rate_key] = json!(rate(self.hist.len(), self.elapsed));
        v
    }
}

/// Least-squares slope and R² of `points`.
pub fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if n < 2.0 {
        return (0.0, 0.0);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    (slope, r2)
}

/// `a / b` rounded, or null when either is missing or `b` is zero.
pub fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round2(a / b)),
        _ => Value::Null,
    }
}

/// Rounds to two decimals (rates and ratios in reports).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `n / secs`, 0 when no time passed.
pub fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round2(n as f64 / secs)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn fit_finds_slope_and_linearity() {
        let (slope, r2) = fit(&[(0.0, 100.0), (10.0, 150.0), (20.0, 200.0)]);
        assert!((slope - 5.0).abs() < 1e-9);
        assert!((r2 - 1.0).abs() < 1e-9);
        assert_eq!(fit(&[(1.0, 1.0)]), (0.0, 0.0));
    }

    use super::*;

    #[test]
    fn stamps_round_trip_and_junk_is_refused() {
        let s = stamp(7, 3);
        let (t, k) = parse_stamp(&s).unwrap();
        assert_eq!(k, 7);
        assert!(t <= now_ns());
        assert!(s.ends_with(",\"pad\":\"xxx\"}"));
        assert_eq!(
            parse_stamp("{\"t\":12,\"k\":4294967295}"),
            Some((12, KIND_POST))
        );
        assert_eq!(parse_stamp("hello"), None);
        assert_eq!(parse_stamp("{\"t\":x,\"k\":1}"), None);
    }

    #[test]
    fn summary_reports_milliseconds() {
        let mut h = histogram();
        for us in [1000, 2000, 3000, 4000] {
            record(&mut h, us);
        }
        let s = summary(&h);
        assert_eq!(s["count"], 4);
        // HdrHistogram reports the top of a value's bucket (3 significant digits).
        let near = |k: &str, want: f64| (s[k].as_f64().unwrap() - want).abs() < 0.005;
        assert!(near("p50_ms", 2.0) && near("max_ms", 4.0), "{s}");
        assert!(near("p99_ms", 4.0) && near("mean_ms", 2.5), "{s}");
    }

    #[test]
    fn samples_merge_rounds() {
        let mut all = Sample::default();
        for (us, errors) in [(1000, 0), (3000, 2)] {
            let mut round = Sample {
                elapsed: 0.5,
                errors,
                ..Sample::default()
            };
            record(&mut round.hist, us);
            all.absorb(round);
        }
        let v = all.json("messages", "messages_per_s");
        assert_eq!(v["messages"], 2);
        assert_eq!(v["messages_per_s"], 2.0);
        assert_eq!(v["errors"], 2);
        assert_eq!(v["elapsed_s"], 1.0);
        assert_eq!(ratio(&json!(3.0), &json!(2.0)), json!(1.5));
        assert_eq!(ratio(&json!(3.0), &json!(0.0)), Value::Null);
    }

    #[test]
    fn deliveries_sort_posts_broadcasts_and_junk() {
        let d = Deliveries::new(2);
        d.received(0, &stamp(KIND_POST, 0));
        d.received(1, &stamp(1, 0));
        d.received(2, &stamp(5, 0));
        d.received(3, "nope");
        assert_eq!(d.posts.count(), 1);
        assert_eq!(d.broadcasts[1].count(), 1);
        assert_eq!(d.broadcasts[0].count(), 0);
        assert_eq!(d.unexpected.load(Ordering::Relaxed), 2);
    }
}
