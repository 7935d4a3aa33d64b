//! A batch's progress: counters shared by its driver and its handle.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How far a batch is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks in the batch.
    pub total: usize,
    /// Tasks that succeeded.
    pub done: usize,
    /// Tasks that failed.
    pub failed: usize,
    /// Tasks submitted and not finished.
    pub in_flight: usize,
}

impl Progress {
    /// Tasks not finished yet (waiting or in flight).
    pub fn outstanding(&self) -> usize {
        self.total.saturating_sub(self.done + self.failed)
    }

    /// Tasks finished, succeeded or failed.
    pub fn finished(&self) -> usize {
        self.done + self.failed
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total: usize,
    pub(crate) done: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
}

impl Counters {
    pub(crate) fn new(total: usize) -> Self {
        Counters {
            total,
            ..Default::default()
        }
    }

    pub(crate) fn snapshot(&self) -> Progress {
        Progress {
            total: self.total,
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = if ok { &self.done } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
