//! The crate's one way to take a `std` mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering it if a panic poisoned it.
///
/// Why recovering is sound here: every critical section in the crate is a single map or slot
/// update that a panic cannot leave half-done, and the panic itself is reported where it
/// happened; refusing the lock afterwards would only turn one failed handler into a dead server.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
