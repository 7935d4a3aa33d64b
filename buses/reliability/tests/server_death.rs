//! A server that claimed requests vanishes mid-call, as a crashed process would: its
//! connection closes and nothing more comes from it.
//!
//! The doomed server runs in a tokio runtime of its own; `shutdown_background` drops every task
//! of that runtime at once, closing its broker connection without a goodbye and without
//! answering. Checked: the callers get an error by their deadline; another server keeps
//! serving; the dead server's registrations (plain and on topics) stop attracting calls.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, Kind, PATIENCE, TestBus, ms, wait_until, within};
use psrpc::{CallOptions, Client, Error, ErrorCode, MethodInfo, SelectionOptions, Server};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const SVC: &str = "Death";
/// Queue-routed, answered directly (no claim).
const ECHO: MethodInfo = MethodInfo::unary("Echo");
/// Affinity-routed: the server claims, then handles.
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const REGION: MethodInfo = MethodInfo::unary("Region");

const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const DEADLINE_SLACK: Duration = Duration::from_millis(750);

fn pick_fast() -> SelectionOptions {
    // Take the first claim: the test decides who serves by who is registered.
    SelectionOptions::for_method(PICK)
        .accept_first_available(true)
        .short_circuit_timeout(Duration::ZERO)
}

/// Starts the doomed server in `rt`; every call it takes hangs. Returns when it is registered.
async fn start_doomed(
    rt: &tokio::runtime::Runtime,
    kind: Kind,
    url: String,
    started: mpsc::UnboundedSender<String>,
) {
    let (ready_tx, ready_rx) = oneshot::channel();
    rt.spawn(async move {
        let bus = TestBus::connect(kind, &url).await.expect("doomed bus");
        let server = Server::new(SVC, bus.arc());
        let started = Arc::new(Mutex::new(started));
        for (method, topics) in [
            (ECHO, &[][..]),
            (PICK, &[]),
            (REGION, &["eu"]),
            (REGION, &["doomed-only"]),
        ] {
            let started = started.clone();
            server
                .register_unary(method, topics, move |ctx, _req: String| {
                    let _ = started.lock().unwrap().send(ctx.method().name().to_owned());
                    async { std::future::pending::<psrpc::Result<String>>().await }
                })
                .await
                .expect("register on the doomed server");
        }
        let _ = ready_tx.send(());
        // Live until the runtime is shut down under it.
        let _keep = (bus, server);
        std::future::pending::<()>().await;
    });
    within("the doomed server to register", PATIENCE, ready_rx)
        .await
        .unwrap();
}

async fn server_dies_mid_call(kind: Kind) {
    let broker = Broker::start(kind);
    let doomed_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    start_doomed(&doomed_rt, kind, broker.url(), started_tx).await;
    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();

    // Two calls in flight on the doomed server: one answered directly, one claimed.
    let mut in_flight = Vec::new();
    for (method, opts) in [
        (ECHO, CallOptions::new()),
        (PICK, CallOptions::new().selection(pick_fast())),
    ] {
        let client = client.clone();
        let opts = opts.timeout(CALL_TIMEOUT);
        in_flight.push(tokio::spawn(async move {
            let start = Instant::now();
            let result = client
                .request::<_, String>(method, &[], &String::new(), opts)
                .await;
            (method.name(), start.elapsed(), result)
        }));
        let handled = within("the doomed handler to start", PATIENCE, started_rx.recv()).await;
        assert_eq!(handled.as_deref(), Some(method.name()));
    }

    // A survivor on its own connection, then the crash.
    let survivor = Server::new(SVC, broker.bus().await.arc());
    for (method, topics) in [(ECHO, &[][..]), (PICK, &[]), (REGION, &["eu"])] {
        survivor
            .register_unary(method, topics, |ctx, req: String| async move {
                Ok(format!("{}:{req}", ctx.server_id()))
            })
            .await
            .unwrap();
    }
    let killed_at = Instant::now();
    doomed_rt.shutdown_background();

    // The broker drops the dead connection's subscriptions: a topic only it served fails
    // fast again (the fast failure needs a channel without subscribers).
    let mut attempts = 0;
    let forgotten = {
        let start = Instant::now();
        loop {
            attempts += 1;
            let opts = CallOptions::new()
                .timeout(Duration::from_millis(200))
                .selection(
                    SelectionOptions::default().affinity_timeout(Duration::from_millis(200)),
                );
            let err = client
                .request::<_, String>(REGION, &["doomed-only"], &String::new(), opts)
                .await
                .unwrap_err();
            if err == Error::no_response() && start.elapsed() < PATIENCE {
                break killed_at.elapsed();
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the dead server still attracts calls"
            );
        }
    };

    let mut in_flight_errors = Vec::new();
    for call in in_flight {
        let (method, took, result) = within("the in-flight call", PATIENCE, call).await.unwrap();
        let err = result.expect_err("the dead server cannot have answered");
        assert!(
            matches!(
                err.code(),
                ErrorCode::DeadlineExceeded | ErrorCode::Unavailable
            ),
            "{method}: {err}"
        );
        assert!(
            took <= CALL_TIMEOUT + DEADLINE_SLACK,
            "{method} took {took:?} with a {CALL_TIMEOUT:?} deadline"
        );
        in_flight_errors.push(format!("\"{method}\":\"{}\"", err.code()));
    }

    // From now on every call reaches the survivor.
    let survivor_id = survivor.id().to_owned();
    let mut served = 0;
    for i in 0..20 {
        for (method, topics, opts) in [
            (ECHO, &[][..], CallOptions::new()),
            (ECHO, &[], CallOptions::new().direct(false)),
            (PICK, &[], CallOptions::new().selection(pick_fast())),
            (REGION, &["eu"], CallOptions::new()),
        ] {
            let reply: String = within(
                "a call after the crash",
                PATIENCE,
                client.request(method, topics, &i.to_string(), opts.timeout(CALL_TIMEOUT)),
            )
            .await
            .unwrap_or_else(|err| panic!("{} after the crash: {err}", method.name()));
            assert_eq!(reply, format!("{survivor_id}:{i}"));
            served += 1;
        }
    }
    assert_eq!(client.stats().pending, 0);
    wait_until("the survivor's handlers to finish", PATIENCE, || {
        survivor.in_flight() == 0
    })
    .await;
    println!(
        "{{\"test\":\"server_dies_mid_call\",\"bus\":\"{}\",\"in_flight_errors\":{{{}}},\
         \"registrations_forgotten_after_ms\":{},\"probe_attempts\":{attempts},\
         \"calls_served_by_survivor\":{served}}}",
        kind.name(),
        in_flight_errors.join(","),
        ms(forgotten),
    );
}

on_nats_and_redis!(server_dies_mid_call);
