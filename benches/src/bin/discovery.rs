//! Discovery: early multi completion, and what announcing costs the call path.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin discovery -- [--quick] [--bus local,nats,redis,mqtt,amqp]
//! ```
//!
//! Per bus (in-process, and NATS, Redis, MQTT and RabbitMQ started through `psrpc-testkit` on
//! free ports; `--bus` picks some):
//!
//! - multi call to 1 and to 4 Rust servers from one caller, one call at a time: p50 of a call
//!   that ends once every server a [`Discovery`] view knows answered (`until(all_known)`) and of
//!   a plain one that collects until its 500 ms timeout, each against the p50 of a unary call to
//!   the same servers in the same run (the baseline);
//! - call-path cost: unary throughput and p50 with 64 callers against one server with
//!   discovery off (`DiscoveryOptions::enabled = false`, the baseline) and on (the default),
//!   interleaved over a few rounds, medians reported.
//!
//! Prints one JSON line per measurement and the ratios. See `BENCHMARKS.md`.

use std::sync::Arc;
use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::client::MultiResult;
use psrpc::discovery::{Discovery, DiscoveryOptions, WatchOptions};
use psrpc::{Bus, CallOptions, Client, MethodInfo, Server, ServerOptions};
use tokio::time::Instant;

#[path = "../closed_loop.rs"]
mod closed_loop;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLERS: usize = 64;
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
    /// A broker's name and URL.
    Remote(&'static str, String),
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Broker::Local(_) => "local",
            Broker::Remote(name, _) => name,
        }
    }

    /// A bus handle; each server and client gets its own connection, as separate processes
    /// would.
    async fn bus(&self) -> Result<Arc<dyn Bus>, BoxError> {
        Ok(match self {
            Broker::Local(bus) => Arc::new(bus.clone()),
            Broker::Remote(_, url) => psrpc_connect::connect(url).await?,
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

/// An error unless every one of `servers` answered.
fn all_answered(servers: usize, results: &[MultiResult<String>]) -> Result<(), BoxError> {
    let n = results.iter().filter(|r| r.result.is_ok()).count();
    if n == servers {
        Ok(())
    } else {
        Err(format!("{n} of {servers} servers answered: {results:?}").into())
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

/// Multi call to `servers` servers, early and at the timeout, against one unary call.
async fn multi(broker: &Broker, servers: usize, sizes: &Sizes) -> Result<(), BoxError> {
    let service = format!("BenchDiscoveryMulti{servers}");
    let svc = service.as_str();
    let bus = broker.name();
    let count = servers;
    let view = Discovery::with_options(
        broker.bus().await?,
        WatchOptions::default().liveness_timeout(Duration::from_secs(60)),
    )
    .await?;
    let mut servers = Vec::new();
    for _ in 0..count {
        servers.push(server(broker, svc, true).await?);
    }
    view.wait_for(Duration::from_secs(10), |d| {
        d.serving(svc, "Gather", &[]).len() == count
    })
    .await?;
    let client = Client::new(svc, broker.bus().await?).await?;
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
            .until(view.all_known(svc, "Gather", &[]))
            .collect_all()
            .await;
        all_answered(count, &results)
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
        all_answered(count, &results)
    })
    .await?;

    let (single, early, full) = (p50_us(&mut single), p50_us(&mut early), p50_us(&mut full));
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"unary_single\",\"servers\":{count},\"calls\":{},\"p50_us\":{single:.0}}}",
        sizes.calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_early_all_known\",\"servers\":{count},\"calls\":{},\"p50_us\":{early:.0}}}",
        sizes.calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_until_timeout\",\"servers\":{count},\"timeout_ms\":{},\"calls\":{},\"p50_us\":{full:.0}}}",
        MULTI_TIMEOUT.as_millis(),
        sizes.timeout_calls
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"multi_ratios\",\"servers\":{count},\"early_p50_vs_unary\":{:.2},\"timeout_p50_vs_unary\":{:.1}}}",
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
    let outcome = closed_loop::run(CALLERS, span, move |_| {
        let client = client.clone();
        async move {
            client
                .request::<String, String>(ECHO, &[], &"ping".to_string(), CallOptions::new())
                .await
                .map(drop)
        }
    })
    .await;
    server.shutdown().await;
    Ok((outcome.rate(), outcome.p50_us()))
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
    // The spread of each side over its rounds: a difference inside it is noise.
    let spread = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
        format!("[{lo:.0},{hi:.0}]")
    };
    let (off_range, on_range) = (spread(&off_rate), spread(&on_rate));
    let (off_rate, off_p50, on_rate, on_p50) = (
        median(&mut off_rate),
        median(&mut off_p50),
        median(&mut on_rate),
        median(&mut on_p50),
    );
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"call_path_ratios\",\"rounds\":{},\"off_calls_per_s\":{off_rate:.0},\"on_calls_per_s\":{on_rate:.0},\"off_range\":{off_range},\"on_range\":{on_range},\"off_p50_us\":{off_p50:.0},\"on_p50_us\":{on_p50:.0},\"throughput_on_vs_off\":{:.2},\"p50_on_vs_off\":{:.2}}}",
        sizes.rounds,
        on_rate / off_rate,
        on_p50 / off_p50
    );
    Ok(())
}

/// The buses of `--bus a,b` (all without it).
fn chosen_buses() -> Result<Vec<String>, BoxError> {
    const ALL: [&str; 5] = ["local", "nats", "redis", "mqtt", "amqp"];
    let mut args = std::env::args().skip_while(|a| a != "--bus").skip(1);
    let Some(list) = args.next() else {
        return Ok(ALL.iter().map(|b| b.to_string()).collect());
    };
    let chosen: Vec<String> = list.split(',').map(str::to_owned).collect();
    match chosen.iter().find(|b| !ALL.contains(&b.as_str())) {
        Some(unknown) => Err(format!("unknown bus {unknown:?}: use {}", ALL.join(",")).into()),
        None => Ok(chosen),
    }
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
            rounds: 5,
        }
    };
    for name in chosen_buses()? {
        // Each broker lives for its bus's runs only.
        let (broker, keep): (Broker, Option<Box<dyn std::any::Any>>) = match name.as_str() {
            "local" => (Broker::Local(LocalBus::new()), None),
            "nats" => {
                let server = psrpc_testkit::NatsServer::start()?;
                (Broker::Remote("nats", server.url()), Some(Box::new(server)))
            }
            "redis" => {
                let server = psrpc_testkit::RedisServer::start()?;
                (
                    Broker::Remote("redis", server.url()),
                    Some(Box::new(server)),
                )
            }
            "mqtt" => {
                let server = psrpc_testkit::MosquittoServer::start()?;
                (Broker::Remote("mqtt", server.url()), Some(Box::new(server)))
            }
            _ => {
                let server = psrpc_testkit::RabbitMqServer::start()?;
                (Broker::Remote("amqp", server.url()), Some(Box::new(server)))
            }
        };
        for servers in [1, 4] {
            multi(&broker, servers, &sizes).await?;
        }
        call_path(&broker, &sizes).await?;
        drop(keep);
    }
    Ok(())
}
