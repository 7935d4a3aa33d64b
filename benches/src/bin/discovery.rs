//! Discovery: early multi completion, and what announcing costs the call path.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin discovery -- [--quick]
//! ```
//!
//! Per bus (in-process, and NATS and Redis started through `psrpc-testkit` on free ports):
//!
//! - multi call to 4 Rust servers from one caller, one call at a time: p50 of a call that ends
//!   once every server a [`Discovery`] view knows answered (`until(all_known)`) and of a plain
//!   one that collects until its 500 ms timeout, each against the p50 of a unary call to the
//!   same servers in the same run (the baseline);
//! - call-path cost: unary throughput and p50 with 64 callers against one server with
//!   discovery off (`DiscoveryOptions::enabled = false`, the baseline) and on (the default),
//!   interleaved over a few rounds, medians reported.
//!
//! Prints one JSON line per measurement and the ratios. See `BENCHMARKS.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::client::MultiResult;
use psrpc::discovery::{Discovery, DiscoveryOptions, WatchOptions};
use psrpc::{Bus, CallOptions, Client, MethodInfo, Server, ServerOptions};
use psrpc_nats::NatsBus;
use psrpc_redis::RedisBus;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLERS: usize = 64;
const SERVERS: usize = 4;
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
/// The timeout a plain multi call collects until.
const MULTI_TIMEOUT: Duration = Duration::from_millis(500);
/// The bound of an early multi call: never reached when every server answers.
const EARLY_BOUND: Duration = Duration::from_secs(10);

/// Sizes of a run.
struct Sizes {
    /// Sequential unary and early multi calls measured per bus.
    calls: usize,
    /// Sequential plain multi calls (each lasts the whole timeout).
    timeout_calls: usize,
    /// Length of one throughput measurement.
    span: Duration,
    /// Off/on rounds of the throughput measurement.
    rounds: usize,
}

/// Where each side connects.
enum Broker {
    Local(LocalBus),
    Nats(String),
    Redis(String),
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Broker::Local(_) => "local",
            Broker::Nats(_) => "nats",
            Broker::Redis(_) => "redis",
        }
    }

    /// A bus handle; each server and client gets its own connection, as separate processes
    /// would.
    async fn bus(&self) -> Result<Arc<dyn Bus>, BoxError> {
        Ok(match self {
            Broker::Local(bus) => Arc::new(bus.clone()),
            Broker::Nats(url) => Arc::new(NatsBus::connect(url.as_str()).await?),
            Broker::Redis(url) => Arc::new(RedisBus::connect(url).await?),
        })
    }
}

fn p50_us(lat: &mut [Duration]) -> f64 {
    lat.sort_unstable();
    lat.get(lat.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A server of `service` answering ECHO and GATHER with its ID.
async fn server(broker: &Broker, service: &str, announce: bool) -> Result<Server, BoxError> {
    let options = ServerOptions::default().discovery(DiscoveryOptions::default().enabled(announce));
    let server = Server::with_options(service.to_owned(), broker.bus().await?, options);
    for method in [ECHO, GATHER] {
        server
            .register_unary(method, &[], |ctx, _req: String| async move {
                Ok(ctx.server_id().to_owned())
            })
            .await?;
    }
    Ok(server)
}

/// An error unless every server answered.
fn all_answered(results: &[MultiResult<String>]) -> Result<(), BoxError> {
    let n = results.iter().filter(|r| r.result.is_ok()).count();
    if n == SERVERS {
        Ok(())
    } else {
        Err(format!("{n} of {SERVERS} servers answered: {results:?}").into())
    }
}

/// Times `calls` sequential runs of `op`, after a few unmeasured ones.
async fn sequential<F, Fut>(calls: usize, op: F) -> Result<Vec<Duration>, BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    for _ in 0..calls.min(10) {
        op().await?;
    }
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        op().await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// Multi call to four servers, early and at the timeout, against one unary call.
async fn multi(broker: &Broker, sizes: &Sizes) -> Result<(), BoxError> {
    const SVC: &str = "BenchDiscoveryMulti";
    let bus = broker.name();
    let view = Discovery::with_options(
        broker.bus().await?,
        WatchOptions::default().liveness_timeout(Duration::from_secs(60)),
    )
    .await?;
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(server(broker, SVC, true).await?);
    }
    view.wait_for(Duration::from_secs(10), |d| {
        d.serving(SVC, "Gather", &[]).len() == SERVERS
    })
    .await?;
    let client = Client::new(SVC, broker.bus().await?).await?;
    let ping = "ping".to_string();
    // References, so that each timed future can copy them.
    let (client, ping, view) = (&client, &ping, &view);

    let mut single = sequential(sizes.calls, move || async move {
        let _: String = client.request(ECHO, &[], ping, CallOptions::new()).await?;
        Ok(())
    })
    .await?;

    // Each call reads the view, as an application would: a server that left is not waited for.
    let mut early = sequential(sizes.calls, move || async move {
        let results = client
            .request_multi::<_, String>(GATHER, &[], ping, CallOptions::new().timeout(EARLY_BOUND))
            .await?
            .until(view.all_known(SVC, "Gather", &[]))
            .collect_all()
            .await;
        all_answered(&results)
    })
    .await?;

    let mut full = sequential(sizes.timeout_calls, move || async move {
        let results = client
            .request_multi::<_, String>(
                GATHER,
                &[],
                ping,
                CallOptions::new().timeout(MULTI_TIMEOUT),
            )
            .await?
            .collect_all()
            .await;
        all_answered(&results)
    })
    .await?;

    let (single, early, full) = (p50_us(&mut single), p50_us(&mut early), p50_us(&mut full));
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"unary_single\",\"calls\":{},\"p50_us\":{single:.0}}}",
        sizes.calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_early_all_known\",\"servers\":{SERVERS},\"calls\":{},\"p50_us\":{early:.0}}}",
        sizes.calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_until_timeout\",\"servers\":{SERVERS},\"timeout_ms\":{},\"calls\":{},\"p50_us\":{full:.0}}}",
        MULTI_TIMEOUT.as_millis(),
        sizes.timeout_calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_ratios\",\"early_p50_vs_unary\":{:.2},\"timeout_p50_vs_unary\":{:.1}}}",
        early / single,
        full / single
    );
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}

/// Unary calls from [`CALLERS`] tasks for `span` against one server announcing or not;
/// returns calls per second and the p50 in microseconds.
async fn throughput(
    broker: &Broker,
    service: &str,
    announce: bool,
    span: Duration,
) -> Result<(f64, f64), BoxError> {
    let server = server(broker, service, announce).await?;
    let client = Client::new(service.to_owned(), broker.bus().await?).await?;
    // Warm up (connections, the client's reply subscription) before timing.
    for _ in 0..10 {
        let _: String = client
            .request(ECHO, &[], &"ping".to_string(), CallOptions::new())
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, stop, count) = (client.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let ping = "ping".to_string();
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let got: psrpc::Result<String> =
                        client.request(ECHO, &[], &ping, CallOptions::new()).await;
                    if got.is_ok() {
                        lat.push(t.elapsed());
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await;
    Ok((rate, p50_us(&mut lat)))
}

/// Discovery off against on, interleaved so drift on a shared machine hits both alike.
async fn call_path(broker: &Broker, sizes: &Sizes) -> Result<(), BoxError> {
    let bus = broker.name();
    let (mut off_rate, mut off_p50, mut on_rate, mut on_p50) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.rounds {
        for announce in [false, true] {
            // A fresh service per run: nothing left of the previous one is subscribed.
            let service = format!("BenchDiscoveryPath{round}{announce}");
            let (rate, p50) = throughput(broker, &service, announce, sizes.span).await?;
            println!(
                "{{\"bus\":\"{bus}\",\"case\":\"unary_throughput\",\"discovery\":{announce},\"round\":{round},\"callers\":{CALLERS},\"calls_per_s\":{rate:.0},\"p50_us\":{p50:.0}}}"
            );
            if announce {
                on_rate.push(rate);
                on_p50.push(p50);
            } else {
                off_rate.push(rate);
                off_p50.push(p50);
            }
        }
    }
    let (off_rate, off_p50, on_rate, on_p50) = (
        median(&mut off_rate),
        median(&mut off_p50),
        median(&mut on_rate),
        median(&mut on_p50),
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"call_path_ratios\",\"rounds\":{},\"off_calls_per_s\":{off_rate:.0},\"on_calls_per_s\":{on_rate:.0},\"off_p50_us\":{off_p50:.0},\"on_p50_us\":{on_p50:.0},\"throughput_on_vs_off\":{:.2},\"p50_on_vs_off\":{:.2}}}",
        sizes.rounds,
        on_rate / off_rate,
        on_p50 / off_p50
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes {
            calls: 50,
            timeout_calls: 1,
            span: Duration::from_millis(200),
            rounds: 1,
        }
    } else {
        Sizes {
            calls: 1000,
            timeout_calls: 10,
            span: Duration::from_secs(2),
            rounds: 3,
        }
    };
    let nats = psrpc_testkit::NatsServer::start()?;
    let redis = psrpc_testkit::RedisServer::start()?;
    for broker in [
        Broker::Local(LocalBus::new()),
        Broker::Nats(nats.url()),
        Broker::Redis(redis.url()),
    ] {
        multi(&broker, &sizes).await?;
        call_path(&broker, &sizes).await?;
    }
    Ok(())
}
