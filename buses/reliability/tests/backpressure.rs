//! Bounded concurrency and backpressure on real brokers.
//!
//! - `ServerOptions::max_in_flight` sheds with `resource_exhausted` (queue methods), or by not
//!   claiming (fan-out claim methods, so another server takes the call); every shed is counted.
//! - A subscriber that never reads holds at most its buffer: later messages are dropped,
//!   counted on the subscription and reported by a `tracing` warning, while other methods and
//!   subscriptions on the same connection keep flowing.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use common::{Broker, Kind, PATIENCE, ms, wait_until, within};
use psrpc::{
    CallOptions, Client, ClientOptions, Error, ErrorCode, MethodInfo, SelectionOptions, Server,
    ServerOptions,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

const SVC: &str = "Backpressure";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const NEWS: MethodInfo = MethodInfo::subscription("News");

/// Counts the runtime's "subscriber too slow" warnings (events with a `dropped` field).
struct DropWarnings;

static DROP_WARNINGS: AtomicU64 = AtomicU64::new(0);

impl tracing::Subscriber for DropWarnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        // WARN and ERROR only: spans (debug level) and debug events stay off.
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().fields().field("dropped").is_some() {
            DROP_WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn count_drop_warnings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(DropWarnings).expect("no other subscriber");
    });
}

async fn in_flight_limit_sheds(kind: Kind) {
    let broker = Broker::start(kind);
    let busy = Server::with_options(
        SVC,
        broker.bus().await.arc(),
        ServerOptions::default().max_in_flight(1),
    );
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    for method in [ECHO, PICK] {
        let (started_tx, release) = (started_tx.clone(), release.clone());
        busy.register_unary(method, &[], move |_ctx, req: String| {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            async move {
                let _ = started_tx.send(());
                let _permit = release.acquire().await;
                Ok(req)
            }
        })
        .await
        .unwrap();
    }
    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();
    let patient = || {
        CallOptions::new()
            .timeout(Duration::from_secs(5))
            .selection(
                SelectionOptions::for_method(ECHO).affinity_timeout(Duration::from_millis(300)),
            )
    };

    // One call occupies the only slot.
    let first = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request::<_, String>(ECHO, &[], &"first".to_owned(), CallOptions::new())
                .await
        }
    });
    within("the first handler to start", PATIENCE, started.recv()).await;
    assert_eq!(busy.in_flight(), 1);

    // Queue calls, direct or claimed, are refused at once with resource_exhausted.
    let mut shed_after = Vec::new();
    for direct in [true, false] {
        let start = Instant::now();
        let err = within(
            "a shed call",
            PATIENCE,
            client.request::<_, String>(ECHO, &[], &String::new(), patient().direct(direct)),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::ResourceExhausted,
            "direct={direct}: {err}"
        );
        shed_after.push(start.elapsed());
    }
    wait_until("two sheds counted", PATIENCE, || busy.stats().shed == 2).await;

    // An affinity call: the busy server does not claim, a free one does.
    let free = Server::new(SVC, broker.bus().await.arc());
    free.register_unary(PICK, &[], |ctx, _req: String| async move {
        Ok(ctx.server_id().to_owned())
    })
    .await
    .unwrap();
    let pick = || {
        CallOptions::new()
            .timeout(Duration::from_secs(5))
            .selection(
                SelectionOptions::for_method(PICK).affinity_timeout(Duration::from_millis(300)),
            )
    };
    let served_by: String = within(
        "an affinity call",
        PATIENCE,
        client.request(PICK, &[], &String::new(), pick()),
    )
    .await
    .unwrap();
    assert_eq!(served_by, free.id());
    wait_until("the silent shed counted", PATIENCE, || {
        busy.stats().shed == 3
    })
    .await;
    // Without the free server nobody claims.
    assert!(free.deregister(PICK, &[]));
    let err = within(
        "an unclaimed call",
        PATIENCE,
        client.request::<_, String>(PICK, &[], &String::new(), pick()),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::no_response());
    wait_until("four sheds counted", PATIENCE, || busy.stats().shed == 4).await;

    // Once the slot is free, calls go through again.
    release.add_permits(1000);
    assert_eq!(
        within("the first call", PATIENCE, first)
            .await
            .unwrap()
            .unwrap(),
        "first"
    );
    let reply: String = within(
        "a call after the release",
        PATIENCE,
        client.request(ECHO, &[], &"again".to_owned(), CallOptions::new()),
    )
    .await
    .unwrap();
    assert_eq!(reply, "again");
    let stats = busy.stats();
    assert_eq!(stats.shed, 4);
    println!(
        "{{\"test\":\"in_flight_limit_sheds\",\"bus\":\"{}\",\"shed\":{},\
         \"resource_exhausted_after_ms\":{{\"direct\":{},\"claimed\":{}}}}}",
        kind.name(),
        stats.shed,
        ms(shed_after[0]),
        ms(shed_after[1]),
    );
}

async fn slow_subscriber_is_bounded(kind: Kind) {
    count_drop_warnings();
    const N: usize = 2000;
    const CAPACITY: usize = 16;
    let broker = Broker::start(kind);
    let server = Server::new(SVC, broker.bus().await.arc());
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    // One connection for both subscribers and the caller: the slow one must not stall it.
    let shared = broker.bus().await;
    let slow_client = Client::with_options(
        SVC,
        shared.arc(),
        ClientOptions::default().subscription_capacity(CAPACITY),
    )
    .await
    .unwrap();
    let fast_client = Client::new(SVC, shared.arc()).await.unwrap();
    let slow = slow_client.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut news = fast_client.subscribe::<String>(NEWS, &[]).await.unwrap();
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let msg = within("news", PATIENCE, news.recv()).await.unwrap();
            assert_eq!(msg, i.to_string(), "news lost or reordered");
        }
    });
    let warnings_before = DROP_WARNINGS.load(Ordering::Relaxed);

    let start = Instant::now();
    let mut calls = 0;
    for i in 0..N {
        let msg = i.to_string();
        server.publish(EVENTS, &[], &msg).await.unwrap();
        server.publish(NEWS, &[], &msg).await.unwrap();
        if i % 100 == 0 {
            // Calls on the same connection go through during the flood.
            let reply: String = within(
                "a call during the flood",
                PATIENCE,
                fast_client.request(ECHO, &[], &msg, CallOptions::new()),
            )
            .await
            .unwrap();
            assert_eq!(reply, msg);
            calls += 1;
        }
    }
    let flood = start.elapsed();
    within("the news reader", PATIENCE, reader).await.unwrap();

    // The slow subscription holds its buffer and no more; every other message is counted.
    let stats = slow.stats().clone();
    wait_until("every message delivered or counted", PATIENCE, || {
        stats.delivered() + stats.dropped() == N as u64
    })
    .await;
    assert_eq!(stats.delivered(), CAPACITY as u64);
    assert_eq!(stats.dropped(), (N - CAPACITY) as u64);
    let warnings = DROP_WARNINGS.load(Ordering::Relaxed) - warnings_before;
    assert!(warnings >= 1, "no tracing warning for the drops");
    println!(
        "{{\"test\":\"slow_subscriber_is_bounded\",\"bus\":\"{}\",\"published\":{N},\
         \"capacity\":{CAPACITY},\"buffered\":{},\"dropped\":{},\"warnings\":{warnings},\
         \"other_subscription_received\":{N},\"calls_during_flood\":{calls},\"flood_ms\":{}}}",
        kind.name(),
        stats.delivered(),
        stats.dropped(),
        ms(flood),
    );
    drop(slow);
}

on_nats_and_redis!(in_flight_limit_sheds, slow_subscriber_is_bounded);
