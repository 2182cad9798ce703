//! Latency histograms: fixed buckets from 0.1 ms to 60 s, counted with atomics (recording
//! never takes a lock), read as a [`HistogramSnapshot`] that `/metrics` exposes as a
//! Prometheus histogram and `status` summarises as p50 / p99.
//!
//! S3 request latency is kept per mount, by request kind, in
//! [`crate::store::RequestStats`]; FUSE operation latency per process, by operation, in
//! [`fuse`] (the FUSE adapter records into it; one process serves one mount).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a last, unbounded one follows).
pub const BOUNDS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0,
];

/// One latency distribution.
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is past every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.partition_point(|&b| b < secs);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Per bucket of [`BOUNDS`], then the one past them (not cumulative).
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(upper bound, count in that bucket alone)`, the unbounded bucket last as
    /// `f64::INFINITY` (the encoder of `/metrics` makes them cumulative).
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect()
    }

    /// The `q` quantile in seconds (linear within its bucket, as Prometheus'
    /// `histogram_quantile` does); `None` with no observation. Past the last bound: that
    /// bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS.get(i) else {
                    return Some(BOUNDS[BOUNDS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        Some(BOUNDS[BOUNDS.len() - 1])
    }
}

/// Histograms by name, for a fixed set of names.
pub struct Latencies {
    names: &'static [&'static str],
    histograms: Vec<Histogram>,
}

impl Latencies {
    pub fn new(names: &'static [&'static str]) -> Self {
        Latencies {
            names,
            histograms: names.iter().map(|_| Histogram::default()).collect(),
        }
    }

    /// Records `d` under `name`; a name not in the set is ignored.
    pub fn observe(&self, name: &str, d: Duration) {
        if let Some(i) = self.names.iter().position(|n| *n == name) {
            self.histograms[i].observe(d);
        }
    }

    /// Every name with its snapshot, in the set's order.
    pub fn snapshot(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        self.names
            .iter()
            .zip(&self.histograms)
            .map(|(n, h)| (*n, h.snapshot()))
            .collect()
    }
}

/// The FUSE operations whose latency is recorded.
pub const FUSE_OPS: &[&str] = &[
    "lookup",
    "getattr",
    "setattr",
    "open",
    "read",
    "write",
    "flush",
    "fsync",
    "release",
    "create",
    "readdir",
    "readdirplus",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "readlink",
    "rename",
    "getxattr",
    "listxattr",
    "setxattr",
    "removexattr",
];

static FUSE: LazyLock<Latencies> = LazyLock::new(|| Latencies::new(FUSE_OPS));

/// This process's FUSE operation latencies: from the call's arrival to its answer.
pub fn fuse() -> &'static Latencies {
    &FUSE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cumulate_and_quantiles_interpolate() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..90 {
            h.observe(Duration::from_micros(700)); // (0.5 ms, 1 ms]
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40)); // (25 ms, 50 ms]
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert!(
            (s.sum_seconds - (0.063 + 0.4)).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
        let buckets = s.per_bucket();
        assert_eq!(buckets.len(), BOUNDS.len() + 1);
        assert_eq!(buckets[3], (0.001, 90));
        assert_eq!(buckets[8], (0.05, 10));
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 0));
        let p50 = s.quantile(0.5).unwrap();
        assert!(p50 > 0.0005 && p50 <= 0.001, "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!(p99 > 0.025 && p99 <= 0.05, "{p99}");
        // Past every bound: the last bound.
        h.observe(Duration::from_secs(3600));
        assert_eq!(h.snapshot().quantile(1.0), Some(60.0));
    }

    #[test]
    fn a_boundary_value_falls_in_its_own_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        assert_eq!(h.snapshot().per_bucket()[3], (0.001, 1));
        assert_eq!(h.snapshot().per_bucket()[2], (0.0005, 0));
    }

    #[test]
    fn names_outside_the_set_are_ignored() {
        let l = Latencies::new(&["a", "b"]);
        l.observe("b", Duration::from_millis(3));
        l.observe("zzz", Duration::from_millis(3));
        let s = l.snapshot();
        assert_eq!((s[0].1.count(), s[1].1.count()), (0, 1));
    }
}
