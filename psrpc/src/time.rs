//! Wall-clock conversions: the wire carries absolute Unix nanoseconds (WIRE.md §9).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Now as Unix nanoseconds on this machine's wall clock.
pub fn now_unix_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The Unix-nanosecond instant `after` from now, saturating.
pub fn unix_nanos_after(after: Duration) -> i64 {
    let delta = i64::try_from(after.as_nanos()).unwrap_or(i64::MAX);
    now_unix_nanos().saturating_add(delta)
}

/// Converts an absolute Unix-nanosecond expiry into a monotonic deadline.
///
/// Returns `None` when the expiry has passed (the request is dead).
pub fn deadline_from_expiry(expiry: i64) -> Option<Instant> {
    let remaining = expiry.saturating_sub(now_unix_nanos());
    if remaining <= 0 {
        return None;
    }
    Some(Instant::now() + Duration::from_nanos(remaining as u64))
}

/// Converts a monotonic deadline into an absolute Unix-nanosecond expiry.
pub fn expiry_from_deadline(deadline: Instant) -> i64 {
    unix_nanos_after(deadline.saturating_duration_since(Instant::now()))
}
