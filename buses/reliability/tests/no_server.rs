//! Figures for calls nobody serves (they fail fast through `Bus::publish_watched`, see the
//! conformance case `unserved_methods_fail_fast`), next to served calls on the same bus.
//! Prints a one-line JSON summary; asserts only the error and the deadline.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Broker, Kind, ms, within};
use psrpc::{CallOptions, Client, Error, ErrorCode, MethodInfo, SelectionOptions, Server};
use tokio::time::Instant;

const SVC: &str = "NoServer";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const NOBODY: MethodInfo = MethodInfo::unary("Nobody");
const CALLS: usize = 20;
/// Long enough that a failure by timeout cannot be mistaken for a fast failure.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Median and maximum of some durations.
fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

async fn unserved_calls_fail_fast(kind: Kind) {
    let broker = Broker::start(kind);
    let server = Server::new(SVC, broker.bus().await.arc());
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();
    // A service nobody serves at all, from a client on another connection.
    let stranger = Client::new("NobodyServesThis", broker.bus().await.arc())
        .await
        .unwrap();
    let opts = |direct: bool, timeout: Duration| {
        CallOptions::new()
            .timeout(timeout)
            .direct(direct)
            .selection(SelectionOptions::for_method(ECHO).affinity_timeout(timeout))
    };
    let mut figures = Vec::new();
    for direct in [true, false] {
        let (mut served, mut unserved) = (Vec::new(), Vec::new());
        for i in 0..CALLS {
            let start = Instant::now();
            let reply: String = within(
                "a served call",
                2 * TIMEOUT,
                client.request(ECHO, &[], &i.to_string(), opts(direct, TIMEOUT)),
            )
            .await
            .unwrap();
            assert_eq!(reply, i.to_string());
            served.push(start.elapsed());

            let start = Instant::now();
            let err = within(
                "an unserved call",
                2 * TIMEOUT,
                stranger.request::<_, String>(NOBODY, &[], &String::new(), opts(direct, TIMEOUT)),
            )
            .await
            .unwrap_err();
            assert_eq!(err, Error::no_response());
            unserved.push(start.elapsed());
        }
        // An unserved method of a service that has other methods served: on NATS its queue
        // subject has subscribers (the bus of the server drops the request as unroutable), so
        // the broker cannot report "no responders" and the call ends at its deadline.
        let short = Duration::from_millis(300);
        let start = Instant::now();
        let err = within(
            "an unserved method of a served service",
            2 * TIMEOUT,
            client.request::<_, String>(NOBODY, &[], &String::new(), opts(direct, short)),
        )
        .await
        .unwrap_err();
        let sibling = start.elapsed();
        assert!(
            err.code() == ErrorCode::Unavailable || err.code() == ErrorCode::DeadlineExceeded,
            "{err}"
        );
        assert!(sibling < short + Duration::from_millis(750), "{sibling:?}");

        let (served_median, served_max) = median_max(served);
        let (unserved_median, unserved_max) = median_max(unserved);
        assert!(
            unserved_max < TIMEOUT,
            "an unserved call waited for its timeout"
        );
        figures.push(format!(
            "\"{}\":{{\"served_median_ms\":{},\"served_max_ms\":{},\
             \"unserved_median_ms\":{},\"unserved_max_ms\":{},\
             \"unserved_method_of_served_service\":{{\"timeout_ms\":{},\"error\":\"{}\",\"ms\":{}}}}}",
            if direct { "direct" } else { "claimed" },
            ms(served_median),
            ms(served_max),
            ms(unserved_median),
            ms(unserved_max),
            ms(short),
            err.code(),
            ms(sibling),
        ));
    }
    println!(
        "{{\"test\":\"unserved_calls_fail_fast\",\"bus\":\"{}\",\"calls\":{CALLS},\
         \"timeout_ms\":{},{}}}",
        kind.name(),
        ms(TIMEOUT),
        figures.join(",")
    );
}

on_nats_and_redis!(unserved_calls_fail_fast);
