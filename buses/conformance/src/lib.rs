//! One behaviour suite, written once and run against every bus.
//!
//! A bus crate's test file builds a [`Harness`] (how to open a new connection to its broker)
//! and expands [`conformance_suite!`], which declares one `#[tokio::test]` per case in
//! [`cases`]. Each test gets a harness of its own, so brokers are not shared between tests.
//!
//! ```
//! use std::sync::Arc;
//! use psrpc::bus::LocalBus;
//! use psrpc_conformance::Harness;
//!
//! fn local() -> Harness {
//!     let bus = LocalBus::new();
//!     Harness::new("local", bus.clone(), move || {
//!         let bus = bus.clone();
//!         async move { Arc::new(bus) as Arc<dyn psrpc::Bus> }
//!     })
//! }
//! # let _ = local;
//! ```

pub mod batch;
pub mod cases;
pub mod discovery;
pub mod durable;
pub mod multi;
pub mod streams;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use psrpc::Bus;

/// How long a case waits for something that should happen before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

type Connect = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn Bus>> + Send + Sync>;

/// A broker under test and a way to open new connections to it.
pub struct Harness {
    name: &'static str,
    connect: Connect,
    // Keeps the broker process (or anything else) alive for the test.
    _keep: Box<dyn Any + Send + Sync>,
}

impl Harness {
    /// A harness named `name` that keeps `keep` alive and opens buses with `connect`.
    pub fn new<F, Fut>(name: &'static str, keep: impl Any + Send + Sync, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Bus>> + Send + 'static,
    {
        Harness {
            name,
            connect: Box::new(move || Box::pin(connect())),
            _keep: Box::new(keep),
        }
    }

    /// The bus kind under test.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A new bus instance: for brokers a separate connection, as a separate process would have.
    pub async fn bus(&self) -> Arc<dyn Bus> {
        (self.connect)().await
    }

    /// Like [`bus`](Self::bus), as a future that borrows nothing: it can connect in another
    /// runtime (one a case kills to crash a server).
    pub fn connector(&self) -> BoxFuture<'static, Arc<dyn Bus>> {
        (self.connect)()
    }
}

/// Waits for `fut` at most [`PATIENCE`], panicking with `what` when it takes longer.
///
/// # Panics
/// When the future does not complete in time: that is the test failing.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// Declares one test per conformance case, each running on a fresh harness from `$harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:expr) => {
        $crate::conformance_suite!(@cases $harness;
            fan_out_reaches_every_subscriber,
            queue_delivers_each_message_to_exactly_one_member,
            subscribe_then_publish_never_loses_the_first_message,
            closed_subscription_stops_receiving,
            unary_call_direct_and_claimed,
            queue_calls_spread_over_servers_on_separate_connections,
            affinity_call_picks_the_best_server,
            multi_call_collects_every_server,
            topic_calls_reach_only_their_topic,
            subscriptions_fan_out_queue_and_topics,
            errors_with_details_cross_the_bus,
            timeouts_and_unserved_methods,
            unserved_methods_fail_fast,
            metadata_reaches_the_handler,
            large_payloads_and_the_broker_limit,
            published_events_survive_an_exit_after_shutdown,
            namespaces_do_not_see_each_other,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::cases::$case(&harness).await;
            }
        )*
        $crate::conformance_suite!(@streams $harness;
            stream_ping_pong,
            stream_ten_thousand_each_way_in_order,
            stream_close_with_error_propagates_its_code,
            stream_handler_return_closes_the_stream,
            stream_client_drop_closes_the_server_side,
            stream_vanished_peer_is_detected,
            stream_select_and_timeout_lose_nothing,
            shutdown_closes_streams_of_silent_peers,
            stream_last_frames_survive_a_client_exit,
        );
        $crate::conformance_suite!(@multi $harness; multi_call_reports_dropped_answers);
        $crate::conformance_suite!(@discovery $harness;
            discovery_server_appears_and_stops_cleanly,
            discovery_crashed_server_drops_out,
            discovery_query_returns_stats,
            health_flips_on_shutdown_and_draining_server_takes_no_new_call,
            early_multi_completion_with_one_and_four_servers,
            non_announcing_server_still_answers_within_timeout,
        );
    };
    (@discovery $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::discovery::$case(&harness).await;
            }
        )*
    };
    (@multi $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::multi::$case(&harness).await;
            }
        )*
    };
    (@streams $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::streams::$case(&harness).await;
            }
        )*
    };
}
