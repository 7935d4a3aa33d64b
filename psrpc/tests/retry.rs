//! The `Retry` interceptor: the caller's deadline bounds all attempts together,
//! `deadline_exceeded` is retried only for idempotent calls, and a retry budget keeps retries
//! from multiplying the load during an outage. On a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::interceptor::Retry;
use psrpc::{CallOptions, Client, ClientOptions, Error, ErrorCode, MethodInfo, Server};

const SVC: &str = "Retrying";
const ECHO: MethodInfo = MethodInfo::unary("Echo");

/// A server whose first `failures` calls fail with `code` after `delay`; counts calls.
async fn server(
    bus: &LocalBus,
    method: MethodInfo,
    failures: usize,
    code: ErrorCode,
    delay: Duration,
) -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(method, &[], move |_ctx, req: String| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                if n < failures {
                    Err(Error::new(code, "try again"))
                } else {
                    Ok(req)
                }
            }
        })
        .await
        .unwrap();
    (server, calls)
}

async fn retrying_client(bus: &LocalBus, retry: Retry) -> Client {
    Client::with_options(
        SVC,
        bus.clone(),
        ClientOptions::default().interceptor(retry),
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_bounds_all_attempts() {
    let bus = LocalBus::new();
    // Each attempt fails after a second: five attempts would take five seconds and more.
    let (_server, calls) = server(
        &bus,
        ECHO,
        usize::MAX,
        ErrorCode::Unavailable,
        Duration::from_secs(1),
    )
    .await;
    let client = retrying_client(&bus, Retry::new(5)).await;
    let timeout = Duration::from_millis(2500);
    let started = tokio::time::Instant::now();
    let err = client
        .request::<_, String>(
            ECHO,
            &[],
            &"x".to_string(),
            CallOptions::new().timeout(timeout),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took <= timeout,
        "all attempts took {took:?}, past the {timeout:?} deadline"
    );
    assert!(
        matches!(
            err.code(),
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
        ),
        "{err}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "attempts that fit in the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_exceeded_is_retried_only_for_idempotent_calls() {
    // Not idempotent: the handler may have run, so the error is final.
    let bus = LocalBus::new();
    let (_server, calls) = server(&bus, ECHO, 1, ErrorCode::DeadlineExceeded, Duration::ZERO).await;
    let client = retrying_client(&bus, Retry::new(3)).await;
    let err = client
        .request::<_, String>(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Idempotent for this call.
    let ok: String = client
        .request(
            ECHO,
            &[],
            &"x".to_string(),
            CallOptions::new().idempotent(true),
        )
        .await
        .unwrap();
    assert_eq!(ok, "x");

    // Idempotent method, marked once.
    const GET: MethodInfo = MethodInfo::unary("Get").idempotent();
    let bus = LocalBus::new();
    let (_server, calls) = server(&bus, GET, 1, ErrorCode::DeadlineExceeded, Duration::ZERO).await;
    let client = retrying_client(&bus, Retry::new(3)).await;
    let ok: String = client
        .request(GET, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(ok, "x");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Fires `n` calls at once at a server that always fails; returns how many reached it.
async fn outage(retry: Retry, n: usize) -> usize {
    let bus = LocalBus::new();
    let (_server, calls) = server(
        &bus,
        ECHO,
        usize::MAX,
        ErrorCode::Unavailable,
        Duration::ZERO,
    )
    .await;
    let client = retrying_client(&bus, retry).await;
    let req = "x".to_string();
    let all = (0..n).map(|_| client.request::<_, String>(ECHO, &[], &req, CallOptions::new()));
    let outcomes = futures::future::join_all(all).await;
    assert!(outcomes.iter().all(|o| o.is_err()));
    calls.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_keeps_an_outage_from_multiplying_load() {
    const CALLS: usize = 300;
    // Default budget: 20 % of recent calls plus 10 a second over 10 s.
    let reached = outage(Retry::new(3), CALLS).await;
    assert!(
        reached > CALLS && reached <= CALLS + CALLS / 5 + 100 + 2,
        "{reached} requests for {CALLS} calls"
    );
    // A tight budget: 10 % of calls, no floor.
    let reached = outage(Retry::new(3).budget(Duration::from_secs(10), 0, 0.1), CALLS).await;
    assert!(
        reached > CALLS && reached <= CALLS + CALLS / 10 + 2,
        "{reached} requests for {CALLS} calls"
    );
    // No budget: every call retried up to its attempts.
    let reached = outage(Retry::new(3).without_budget(), CALLS).await;
    assert_eq!(reached, 3 * CALLS);
}

#[tokio::test(start_paused = true)]
async fn extreme_backoffs_neither_panic_nor_outlive_the_deadline() {
    let bus = LocalBus::new();
    let (_server, calls) = server(
        &bus,
        ECHO,
        usize::MAX,
        ErrorCode::Unavailable,
        Duration::ZERO,
    )
    .await;
    let retry = Retry::new(u32::MAX)
        .backoff(Duration::MAX, Duration::MAX)
        .jitter(1.0);
    let client = retrying_client(&bus, retry).await;
    let started = tokio::time::Instant::now();
    let timeout = Duration::from_secs(1);
    let err = client
        .request::<_, String>(
            ECHO,
            &[],
            &"x".to_string(),
            CallOptions::new().timeout(timeout),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(started.elapsed() <= timeout);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no backoff fits in the deadline"
    );
}
