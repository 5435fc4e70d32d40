//! What a reactor has done, for an embedder's dashboards:
//! [`Reactor::metrics`](crate::Reactor::metrics) takes a [`Metrics`]
//! snapshot. Owns the counter and histogram types the reactor, its
//! executor and the view record into (each keeps its own); reading them
//! never blocks a job. Records nothing itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::CommitStats;

/// Buckets of the latency histogram: bucket `i` counts latencies in
/// `[2^i, 2^(i+1))` microseconds (bucket 0 also counts 0 µs); the last
/// one everything from about 36 minutes up.
const BUCKETS: usize = 32;

/// A lock-free histogram of durations in power-of-two buckets of
/// microseconds: fixed size, one atomic add per record.
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = (u64::BITS - micros.leading_zeros()).saturating_sub(1) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Latencies {
        Latencies {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Job latencies, from submission until written (`WriteReady`) or failed,
/// counted in power-of-two buckets of microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latencies {
    /// `buckets[i]`: jobs that took `[2^i, 2^(i+1))` µs (`buckets[0]` also
    /// those under 1 µs).
    pub buckets: Vec<u64>,
}

impl Latencies {
    /// Jobs counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// An upper bound of the `q` quantile (0.0–1.0): the top of the bucket
    /// it falls in, so within a factor of two. Zero without jobs.
    pub fn quantile_upper_bound(&self, q: f64) -> Duration {
        let count = self.count();
        if count == 0 {
            return Duration::ZERO;
        }
        let rank = ((count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(1u64 << (i + 1).min(63));
            }
        }
        Duration::MAX
    }
}

/// Hits and misses of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups the cache answered.
    pub hits: u64,
    /// Lookups that went to the store.
    pub misses: u64,
}

impl CacheStats {
    /// Hits over lookups (0 without lookups).
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// Counters of a cache, shared by the threads that look it up.
#[derive(Default)]
pub(crate) struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a reactor's counters since it opened
/// ([`Reactor::metrics`](crate::Reactor::metrics)). Counters are read one
/// by one while jobs run, so two of them may disagree by the jobs in
/// flight.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Jobs waiting in the queue now.
    pub queued_jobs: usize,
    /// Documents with jobs waiting or running now.
    pub queued_documents: usize,
    /// Jobs that were written.
    pub jobs_written: u64,
    /// Jobs that failed.
    pub jobs_failed: u64,
    /// Job latency, submission until written or failed.
    pub job_latency: Latencies,
    /// Ordinals the store has written that the view has not applied yet.
    pub view_lag: u64,
    /// The executor's cache of stream states (a miss reads the head
    /// record, or folds the stream).
    pub executor_cache: CacheStats,
    /// The view's document cache (a miss folds the document).
    pub view_cache: CacheStats,
    /// The store's group commit: RocksDB writes, fsyncs, appends.
    pub commit: CommitStats,
}

impl Metrics {
    /// Appends per fsync (0 before the first fsync): how well group
    /// commit shares them.
    pub fn appends_per_fsync(&self) -> f64 {
        if self.commit.syncs == 0 {
            0.0
        } else {
            self.commit.appends as f64 / self.commit.syncs as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles_bound_what_was_recorded() {
        let h = LatencyHistogram::new();
        for micros in [0, 1, 3, 900, 1_000, 1_100, 70_000] {
            h.record(Duration::from_micros(micros));
        }
        let l = h.snapshot();
        assert_eq!(l.count(), 7);
        assert_eq!(l.buckets[0], 2, "0 and 1 µs");
        assert_eq!(l.buckets[1], 1, "3 µs");
        assert_eq!(l.buckets[9], 2, "900 and 1,000 µs");
        assert_eq!(l.buckets[10], 1, "1,100 µs: 1,024 is the edge");
        // The median (4th of 7) is 900 µs: its bucket tops out at 1,024.
        assert_eq!(l.quantile_upper_bound(0.5), Duration::from_micros(1_024));
        assert!(l.quantile_upper_bound(1.0) >= Duration::from_micros(70_000));
        assert_eq!(
            Latencies::default().quantile_upper_bound(0.5),
            Duration::ZERO
        );
        h.record(Duration::from_secs(1 << 40));
        assert_eq!(
            h.snapshot().buckets[BUCKETS - 1],
            1,
            "the last bucket holds the rest"
        );
    }
}
