//! Latency percentiles.

use std::time::Duration;

/// Percentiles of a set of round trips, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Latencies {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latencies {
    /// The percentiles of `samples` (nearest rank); `None` when empty.
    pub fn from_samples(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * samples.len() as f64).ceil() as usize;
            micros(samples[rank.clamp(1, samples.len()) - 1])
        };
        let total: Duration = samples.iter().sum();
        Some(Latencies {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            mean_us: micros(total) / samples.len() as f64,
        })
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latencies::from_samples(&mut samples).unwrap();
        assert_eq!((l.p50_us, l.p90_us, l.p99_us), (50.0, 90.0, 99.0));
        assert!((l.mean_us - 50.5).abs() < 1e-9);
        assert!(Latencies::from_samples(&mut []).is_none());
    }
}
