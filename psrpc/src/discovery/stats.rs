//! Per-method counters and a latency histogram a server keeps for introspection.
//!
//! Recording is a few relaxed atomic adds, so it costs the call path nothing measurable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use super::wire::MethodStats;

/// Bucket `i` holds latencies below `2^i` microseconds; the last one everything longer.
const BUCKETS: usize = 32;

#[derive(Default)]
struct Method {
    calls: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    histogram: [AtomicU64; BUCKETS],
}

/// Counters of every method of one server.
#[derive(Default)]
pub(crate) struct MethodTable(DashMap<&'static str, Arc<Method>>);

impl MethodTable {
    /// Starts timing one call of `method`; the returned guard records it when finished.
    pub(crate) fn begin(&self, method: &'static str) -> CallTimer {
        let entry = match self.0.get(method) {
            Some(entry) => entry.clone(),
            None => self.0.entry(method).or_default().clone(),
        };
        entry.in_flight.fetch_add(1, Ordering::Relaxed);
        CallTimer {
            method: entry,
            started: Instant::now(),
            ok: false,
        }
    }

    /// A snapshot of every method's counters, sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<MethodStats> {
        let mut out: Vec<MethodStats> = self
            .0
            .iter()
            .map(|e| {
                let m = e.value();
                let counts: Vec<u64> = m
                    .histogram
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                MethodStats {
                    method: e.key().to_string(),
                    calls: m.calls.load(Ordering::Relaxed),
                    errors: m.errors.load(Ordering::Relaxed),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    p50_us: percentile(&counts, 0.50),
                    p90_us: percentile(&counts, 0.90),
                    p99_us: percentile(&counts, 0.99),
                }
            })
            .collect();
        out.sort_by(|a, b| a.method.cmp(&b.method));
        out
    }
}

/// The upper bound (µs) of the bucket holding quantile `q`; 0 without samples.
fn percentile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return 1u64 << i;
        }
    }
    1u64 << (BUCKETS - 1)
}

/// Times one call; records it (as an error unless [`CallTimer::ok`] was called) when dropped.
pub(crate) struct CallTimer {
    method: Arc<Method>,
    started: Instant,
    ok: bool,
}

impl CallTimer {
    /// Marks the call successful.
    pub(crate) fn ok(&mut self, ok: bool) {
        self.ok = ok;
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        let m = &self.method;
        let micros = self.started.elapsed().as_micros() as u64;
        let bucket = ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1);
        m.histogram[bucket].fetch_add(1, Ordering::Relaxed);
        m.calls.fetch_add(1, Ordering::Relaxed);
        if !self.ok {
            m.errors.fetch_add(1, Ordering::Relaxed);
        }
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_bounds() {
        let mut counts = [0u64; BUCKETS];
        counts[3] = 90; // below 8 µs
        counts[10] = 10; // below 1024 µs
        assert_eq!(percentile(&counts, 0.5), 8);
        assert_eq!(percentile(&counts, 0.9), 8);
        assert_eq!(percentile(&counts, 0.99), 1024);
        assert_eq!(percentile(&[0; BUCKETS], 0.5), 0);
    }

    #[test]
    fn timer_counts_calls_errors_and_in_flight() {
        let table = MethodTable::default();
        let mut good = table.begin("A");
        let bad = table.begin("A");
        assert_eq!(table.snapshot()[0].in_flight, 2);
        good.ok(true);
        drop(good);
        drop(bad);
        let s = &table.snapshot()[0];
        assert_eq!((s.calls, s.errors, s.in_flight), (2, 1, 0));
        assert!(s.p50_us >= 1);
    }
}
