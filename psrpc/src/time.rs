//! Time arithmetic that never panics or wraps, and wall-clock conversions (the wire carries
//! absolute Unix nanoseconds, docs/wire.md §9).
//!
//! Users may pass any `Duration` (`Duration::MAX` for "no timeout"), so every sum of an instant
//! and a duration, and every conversion of a duration to an integer, goes through the
//! saturating helpers here.
//!
//! Internal; the wall-clock helpers are public as [`crate::wire`] re-exports, for code that
//! builds wire messages by hand.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The farthest a deadline reaches: about 30 years, what tokio itself uses for "never".
/// Longer durations are clamped to it, so the instant arithmetic cannot overflow.
pub(crate) const NEVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `base + after`, clamped to [`NEVER`] after `base` instead of panicking on overflow.
pub(crate) fn instant_after(base: Instant, after: Duration) -> Instant {
    let after = after.min(NEVER);
    base.checked_add(after).unwrap_or(base)
}

/// Now plus `after`, saturating (see [`instant_after`]).
pub(crate) fn deadline_in(after: Duration) -> Instant {
    instant_after(Instant::now(), after)
}

/// A duration in nanoseconds as an `i64`, saturating at `i64::MAX` instead of wrapping.
pub(crate) fn nanos_i64(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A duration in milliseconds as a `u64`, saturating at `u64::MAX` instead of wrapping.
pub(crate) fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Now as Unix nanoseconds on this machine's wall clock.
pub fn now_unix_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => nanos_i64(d),
        Err(_) => 0,
    }
}

/// The Unix-nanosecond instant `after` from now, saturating.
pub fn unix_nanos_after(after: Duration) -> i64 {
    now_unix_nanos().saturating_add(nanos_i64(after))
}

/// Converts an absolute Unix-nanosecond expiry into a monotonic deadline.
///
/// Returns `None` when the expiry has passed (the request is dead).
pub(crate) fn deadline_from_expiry(expiry: i64) -> Option<Instant> {
    let remaining = expiry.saturating_sub(now_unix_nanos());
    let remaining = u64::try_from(remaining).ok().filter(|r| *r > 0)?;
    Some(deadline_in(Duration::from_nanos(remaining)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_durations_saturate() {
        let now = Instant::now();
        assert_eq!(instant_after(now, Duration::MAX), now + NEVER);
        assert_eq!(instant_after(now, Duration::ZERO), now);
        assert_eq!(nanos_i64(Duration::MAX), i64::MAX);
        assert_eq!(nanos_i64(Duration::from_nanos(5)), 5);
        assert_eq!(millis_u64(Duration::MAX), u64::MAX);
        assert_eq!(unix_nanos_after(Duration::MAX), i64::MAX);
        assert!(deadline_from_expiry(i64::MAX).is_some());
        assert!(deadline_from_expiry(i64::MIN).is_none());
    }
}
