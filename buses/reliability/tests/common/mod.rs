//! Brokers, buses and waiting helpers shared by the reliability tests, on NATS and Redis alike.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use psrpc::Bus;
use psrpc_nats::NatsBus;
use psrpc_redis::RedisBus;
use psrpc_testkit::{NatsOptions, NatsServer, RedisOptions, RedisServer};
use tokio::time::Instant;

/// How long a test waits for something that must happen before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Declares `mod $case { nats, redis }`: one test per bus, each running `$case(Kind::…)`.
macro_rules! on_nats_and_redis {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$case(crate::common::Kind::Nats).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$case(crate::common::Kind::Redis).await;
            }
        }
    )*};
}

/// The broker kinds under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Redis,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }
}

/// A throwaway broker process of either kind.
pub enum Broker {
    Nats(NatsServer, Option<(String, String)>),
    Redis(RedisServer),
}

impl Broker {
    pub fn start(kind: Kind) -> Self {
        match kind {
            Kind::Nats => Broker::Nats(NatsServer::start().expect("nats-server"), None),
            Kind::Redis => Broker::Redis(RedisServer::start().expect("redis-server")),
        }
    }

    /// A broker that requires a user and password (Redis has only the password).
    pub fn start_with_credentials(kind: Kind, user: &str, password: &str) -> Self {
        match kind {
            Kind::Nats => {
                let options = NatsOptions {
                    credentials: Some((user.to_owned(), password.to_owned())),
                    ..Default::default()
                };
                Broker::Nats(
                    NatsServer::start_with(options).expect("nats-server"),
                    Some((user.to_owned(), password.to_owned())),
                )
            }
            Kind::Redis => {
                let options = RedisOptions {
                    password: Some(password.to_owned()),
                    ..Default::default()
                };
                Broker::Redis(RedisServer::start_with(options).expect("redis-server"))
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Broker::Nats(..) => Kind::Nats,
            Broker::Redis(_) => Kind::Redis,
        }
    }

    /// The URL to connect with, credentials included.
    pub fn url(&self) -> String {
        match self {
            Broker::Nats(server, None) => server.url(),
            Broker::Nats(server, Some((user, pass))) => {
                format!("nats://{user}:{pass}@127.0.0.1:{}", server.port())
            }
            Broker::Redis(server) => server.url(),
        }
    }

    /// The URL without credentials.
    pub fn anonymous_url(&self) -> String {
        match self {
            Broker::Nats(server, _) => server.url(),
            Broker::Redis(server) => format!("redis://127.0.0.1:{}/", server.port()),
        }
    }

    /// A new connection, as a separate process would have.
    pub async fn bus(&self) -> TestBus {
        TestBus::connect(self.kind(), &self.url())
            .await
            .expect("connect to the broker")
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        match self {
            Broker::Nats(server, _) => server.kill(),
            Broker::Redis(server) => server.kill(),
        }
    }

    /// Starts the broker again on the same port (the test kit polls for readiness, which
    /// blocks: keep it off the runtime's workers).
    pub fn restart(&mut self) {
        tokio::task::block_in_place(|| match self {
            Broker::Nats(server, _) => server.restart().expect("restart nats-server"),
            Broker::Redis(server) => server.restart().expect("restart redis-server"),
        });
    }
}

/// A bus of either kind, with access to its own counters.
#[derive(Clone)]
pub enum TestBus {
    Nats(NatsBus),
    Redis(RedisBus),
}

impl TestBus {
    pub async fn connect(kind: Kind, url: &str) -> Result<Self, String> {
        match kind {
            Kind::Nats => NatsBus::connect(url)
                .await
                .map(TestBus::Nats)
                .map_err(|e| e.to_string()),
            Kind::Redis => RedisBus::connect(url)
                .await
                .map(TestBus::Redis)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn arc(&self) -> Arc<dyn Bus> {
        match self {
            TestBus::Nats(bus) => Arc::new(bus.clone()),
            TestBus::Redis(bus) => Arc::new(bus.clone()),
        }
    }

    /// Broker-side subscriptions this bus holds: NATS subscriptions and the local ones they
    /// feed, or Redis channels.
    pub fn subscriptions(&self) -> (usize, usize) {
        match self {
            TestBus::Nats(bus) => {
                let stats = bus.stats();
                (stats.nats_subscriptions, stats.local_subscriptions)
            }
            TestBus::Redis(bus) => (bus.stats().channels, 0),
        }
    }

    /// Messages the bus itself dropped as unroutable (no route key, or no local subscriber).
    pub fn unroutable(&self) -> u64 {
        match self {
            TestBus::Nats(bus) => bus.stats().unroutable,
            TestBus::Redis(bus) => bus.stats().unroutable,
        }
    }

    /// True once the bus has noticed the broker is gone.
    pub fn noticed_outage(&self) -> bool {
        match self {
            // async-nats's `State` is not re-exported; its Debug spelling is enough here.
            TestBus::Nats(bus) => format!("{:?}", bus.client().connection_state()) != "Connected",
            TestBus::Redis(bus) => bus.stats().disconnects >= 1,
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for `fut` at most `limit`, panicking with `what` when it takes longer.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Milliseconds with one decimal, for the JSON summaries.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
