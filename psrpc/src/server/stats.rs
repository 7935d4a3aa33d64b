//! Counters of what a server received, dropped and sent.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of a server's counters.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ServerStats {
            $(#[$doc] pub $name: u64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> ServerStats {
                ServerStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Requests received and accepted for processing.
    received,
    /// Requests whose handler ran to completion (with a result or an error).
    handled,
    /// Payloads that were not a valid request envelope, or whose request did not decode.
    malformed,
    /// Requests dropped because they had expired on arrival.
    expired,
    /// Requests refused because the in-flight limit was reached.
    shed,
    /// Claimed requests another server was chosen for (or no answer came).
    claims_lost,
    /// Calls cancelled by their caller while the handler ran.
    cancelled,
    /// Responses or claims the bus failed to publish.
    publish_errors,
}

impl Counters {
    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
