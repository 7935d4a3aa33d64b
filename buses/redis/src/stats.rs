//! [`RedisBusStats`]: a snapshot of a bus's counters.

/// Counters of a [`RedisBus`](crate::RedisBus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBusStats {
    /// Messages pushed by the server on the receiving connection.
    pub received: u64,
    /// Messages for channels no local subscriber listens to (any more).
    pub unroutable: u64,
    /// Queue messages this bus won the lock for.
    pub locks_won: u64,
    /// Queue messages another member won.
    pub locks_lost: u64,
    /// Queue lock `SET`s that failed (the message was not delivered here).
    pub lock_errors: u64,
    /// Queue messages dropped because too many were waiting for a lock `SET`.
    pub lock_overflow: u64,
    /// Times the receiving connection was lost.
    pub disconnects: u64,
    /// Redis channels this bus is subscribed to (or subscribing).
    pub channels: usize,
}
