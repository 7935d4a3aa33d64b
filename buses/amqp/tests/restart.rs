//! A broker killed under load and restarted on the same port: calls end by their deadline with
//! an error while it is down, and service resumes once it is back (subscriptions restored).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use psrpc::bus::{Bus, SubscribeOptions};
use psrpc::{CallOptions, Channel, Client, MethodInfo, Server, wire};
use psrpc_amqp::{AmqpBus, AmqpBusOptions};
use psrpc_testkit::RabbitMqServer;
use tokio::time::Instant;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Generous bound for "by its deadline": the deadline plus scheduling slack on a busy machine.
const DEADLINE_SLACK: Duration = Duration::from_secs(3);
const PATIENCE: Duration = Duration::from_secs(60);

async fn bus(url: &str) -> AmqpBus {
    let options = AmqpBusOptions::default().operation_timeout(Duration::from_secs(1));
    AmqpBus::with_options(url, options).await.expect("amqp bus")
}

async fn call(client: &Client) -> psrpc::Result<String> {
    client
        .request(
            ECHO,
            &[],
            &"ping".to_string(),
            CallOptions::new().timeout(CALL_TIMEOUT),
        )
        .await
}

/// Calls until one succeeds, each bounded by its own deadline.
async fn until_served(client: &Client) {
    let start = Instant::now();
    loop {
        if call(client).await.is_ok() {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "service did not resume");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_by_their_deadline_while_the_broker_is_down_and_resume_after() {
    let broker = RabbitMqServer::start().expect("rabbitmq-server");
    let url = broker.url();
    let server_bus = bus(&url).await;
    let server = Server::new("Restart", server_bus.clone());
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client_bus = bus(&url).await;
    let client = Client::new("Restart", client_bus.clone()).await.unwrap();
    // A fan-out subscription on a bus of its own, to see it restored too.
    let sub_bus = bus(&url).await;
    let events = Channel::request("Restart", "Events", ["all"], false);
    let mut sub = sub_bus
        .subscribe(&events, SubscribeOptions::default())
        .await
        .unwrap();
    until_served(&client).await;

    // Load: calls in a loop on two tasks, each timed against its deadline.
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failed_while_down = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let client = client.clone();
        let (down, stop, failed) = (down.clone(), stop.clone(), failed_while_down.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let was_down = down.load(Ordering::Relaxed);
                let result = call(&client).await;
                assert!(
                    start.elapsed() < CALL_TIMEOUT + DEADLINE_SLACK,
                    "a call outlived its deadline: {result:?}"
                );
                if was_down && down.load(Ordering::Relaxed) {
                    assert!(result.is_err(), "a call succeeded with the broker down");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    broker.kill();
    down.store(true, Ordering::Relaxed);
    // Let the load run against the dead broker until a few calls have failed.
    let start = Instant::now();
    while failed_while_down.load(Ordering::Relaxed) < 4 {
        assert!(
            start.elapsed() < PATIENCE,
            "calls did not end while the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Publishing while down is an error, never a hang.
    let err = server_bus
        .publish(&events, wire::encode_envelope_raw("t", b"x"))
        .await;
    assert!(err.is_err());

    down.store(false, Ordering::Relaxed);
    broker.restart().expect("restart");
    until_served(&client).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    // The fan-out subscription was restored on the new connection.
    let start = Instant::now();
    loop {
        server_bus
            .publish(&events, wire::encode_envelope_raw("t", b"after"))
            .await
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "subscription not restored");
    }
    for bus in [&server_bus, &client_bus, &sub_bus] {
        assert!(bus.stats().reconnects >= 1, "{:?}", bus.stats());
    }
}
