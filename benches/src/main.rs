//! psrpc benchmarks against the raw brokers, on every bus, in one run.
//!
//! ```text
//! cargo run --release -p psrpc-benches -- [--quick|--full] [--nats URL] [--redis URL] [--mqtt URL] [--amqp URL] [--only PATTERN]
//! ```
//!
//! Without URLs the brokers are started through `psrpc-testkit` (`nats-server`, `redis-server`,
//! `mosquitto`, `rabbitmq-server` on free ports). Every measurement is printed as one JSON line
//! on stdout as it completes; a markdown table of all of them follows. Progress goes to stderr.
//! See `BENCHMARKS.md`.

mod env;
mod flood;
mod harness;
mod mem;
mod probe;
mod raw;
mod raw_mqtt;
mod report;
mod soak;
mod stats;
mod suite;

use std::process::ExitCode;

use env::{Brokers, BusKind};
use harness::{Budget, Result};
use report::{Kind, Measurement};

const USAGE: &str = "\
usage: psrpc-benches [--quick|--full] [--nats URL] [--redis URL] [--mqtt URL] [--amqp URL]
                     [--only PATTERN]
       psrpc-benches --soak MINUTES [--soak-bus local|nats|redis|mqtt|amqp] [--nats URL] [--redis URL]
                     [--mqtt URL] [--amqp URL]
       psrpc-benches --idle-rss local|nats|redis|mqtt|amqp [--nats URL] [--redis URL]

  --quick         a few hundred milliseconds per measurement (about a minute in all)
  --full          the published figures (default; several minutes)
  --nats URL      use this NATS server instead of starting one
  --redis URL     use this Redis server instead of starting one
  --amqp URL      use this AMQP broker (amqp://user:pass@host:port/vhost) instead of starting one
  --mqtt URL      use this MQTT broker (mqtt://HOST:PORT) instead of starting a mosquitto
  --only PATTERN  run only cases whose `bus/case` contains PATTERN (repeatable, or
                  comma-separated), e.g. `--only nats/` or `--only rpc_direct,raw_`
  --soak MINUTES  mixed load for that long, sampling RSS and live tasks every 10 s
  --soak-bus BUS  the bus of the soak (default nats)
  --idle-rss BUS  print the idle resident size of a process with one client and one server
";

/// The command line.
#[derive(Debug, Default)]
struct Args {
    quick: bool,
    nats: Option<String>,
    redis: Option<String>,
    amqp: Option<String>,
    mqtt: Option<String>,
    only: Vec<String>,
    /// Soak for this many minutes instead of benchmarking.
    soak: Option<f64>,
    /// The bus of the soak.
    soak_bus: Option<BusKind>,
    /// Internal: run the memory probe for a bus with this many registrations.
    memory_probe: Option<(BusKind, usize)>,
    /// Internal: report the idle resident size of one client and one server on a bus.
    idle_probe: Option<BusKind>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> std::result::Result<Args, String> {
    let mut out = Args::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => out.quick = true,
            "--full" => out.quick = false,
            "--nats" => out.nats = Some(value("--nats")?),
            "--redis" => out.redis = Some(value("--redis")?),
            "--amqp" => out.amqp = Some(value("--amqp")?),
            "--mqtt" => out.mqtt = Some(value("--mqtt")?),
            "--only" => out.only.extend(
                value("--only")?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            "--soak" => {
                let minutes: f64 = value("--soak")?
                    .parse()
                    .map_err(|e| format!("--soak minutes: {e}"))?;
                out.soak = Some(minutes);
            }
            "--soak-bus" => {
                let bus = value("--soak-bus")?;
                let kind = BusKind::ALL
                    .into_iter()
                    .find(|k| k.name() == bus)
                    .ok_or(format!("unknown bus {bus}"))?;
                out.soak_bus = Some(kind);
            }
            "--memory-probe" => {
                let bus = value("--memory-probe")?;
                let kind = BusKind::ALL
                    .into_iter()
                    .find(|k| k.name() == bus)
                    .ok_or(format!("unknown bus {bus}"))?;
                let n = value("--memory-probe")?
                    .parse()
                    .map_err(|e| format!("registrations: {e}"))?;
                out.memory_probe = Some((kind, n));
            }
            "--idle-rss" => {
                let bus = value("--idle-rss")?;
                let kind = BusKind::ALL
                    .into_iter()
                    .find(|k| k.name() == bus)
                    .ok_or(format!("unknown bus {bus}"))?;
                out.idle_probe = Some(kind);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            if !err.is_empty() {
                eprintln!("{err}");
            }
            eprint!("{USAGE}");
            return if err.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmarks; `Ok(false)` when a scenario failed outright.
async fn run(args: Args) -> Result<bool> {
    if let Some((kind, n)) = args.memory_probe {
        let brokers =
            Brokers::start(args.nats, args.redis, args.mqtt, &[])?.with_amqp(args.amqp, &[])?;
        probe::run_child(kind, &brokers, n).await?;
        return Ok(true);
    }
    if let Some(kind) = args.idle_probe {
        let brokers = Brokers::start(args.nats, args.redis, args.mqtt, &[kind])?
            .with_amqp(args.amqp, &[kind])?;
        probe::run_idle_child(kind, &brokers).await?;
        return Ok(true);
    }
    if let Some(minutes) = args.soak {
        let kind = args.soak_bus.unwrap_or(BusKind::Nats);
        let brokers = Brokers::start(args.nats, args.redis, args.mqtt, &[kind])?
            .with_amqp(args.amqp, &[kind])?;
        eprintln!(
            "psrpc-benches soak, {minutes} min on {}; {}",
            kind.name(),
            machine()
        );
        let fabric = env::Fabric::new(kind, &brokers);
        soak::run(
            &fabric,
            kind,
            std::time::Duration::from_secs_f64(minutes * 60.0),
        )
        .await?;
        return Ok(true);
    }
    let budget = if args.quick {
        Budget::quick()
    } else {
        Budget::full()
    };
    let mode = if args.quick { "quick" } else { "full" };
    let wanted: Vec<BusKind> = BusKind::ALL
        .into_iter()
        .filter(|&k| {
            suite::cases(k)
                .iter()
                .any(|c| suite::wants(&args.only, k, c))
        })
        .collect();
    let brokers =
        Brokers::start(args.nats, args.redis, args.mqtt, &wanted)?.with_amqp(args.amqp, &wanted)?;
    mem::set_broker_pids(brokers.started_pids());
    let machine = machine();
    eprintln!(
        "psrpc-benches, {mode} mode; {machine}; brokers: {}",
        brokers.describe()
    );
    let load_before = load_average();

    let mut suite = suite::Suite::new(budget, args.only.clone(), &brokers);
    for &kind in &wanted {
        suite.run_bus(kind).await;
    }
    for &kind in &wanted {
        if !suite.wants(kind, "mem_per_registration") {
            continue;
        }
        eprintln!(
            "{}/mem_per_registration n={}",
            kind.name(),
            budget.registrations
        );
        // The child runs its own runtime and blocks on its output: keep it off the workers.
        let probe =
            tokio::task::block_in_place(|| probe::run(kind, &brokers, budget.registrations));
        match probe {
            Ok(p) => {
                let mut m = Measurement::new(kind.name(), "mem_per_registration", Kind::Memory)
                    .with("registrations", p.registrations)
                    .with("rss_before", p.rss_before)
                    .with("rss_after", p.rss_after)
                    .with("seconds", (p.seconds * 100.0).round() / 100.0);
                m.samples = p.registrations as u64;
                m.bytes = Some(p.bytes_per_registration);
                suite.report_add(m);
            }
            Err(err) => suite.fail(format!("{}/mem_per_registration", kind.name()), &err),
        }
    }
    for &kind in &wanted {
        if !suite.wants(kind, "idle_rss") {
            continue;
        }
        eprintln!("{}/idle_rss", kind.name());
        match tokio::task::block_in_place(|| probe::run_idle(kind, &brokers)) {
            Ok(v) => {
                let mut m = Measurement::new(kind.name(), "idle_rss", Kind::Memory);
                m.bytes = v
                    .get("rss")
                    .and_then(serde_json::Value::as_u64)
                    .map(|b| b as f64);
                for key in ["peak", "rss_anon", "rss_file", "threads"] {
                    if let Some(x) = v.get(key) {
                        m = m.with(key, x.clone());
                    }
                }
                suite.report_add(m);
            }
            Err(err) => suite.fail(format!("{}/idle_rss", kind.name()), &err),
        }
    }
    let memory = mem::read();
    let mut peak = Measurement::new("all", "peak_rss", Kind::Memory).with("rss_end", memory.rss);
    peak.bytes = Some(memory.peak as f64);
    suite.report_add(peak);
    let load_after = load_average();

    let (report, failures) = suite.into_parts();
    println!();
    println!("## psrpc benchmarks ({mode} mode)");
    println!();
    println!("Machine: {machine}. Load average before: {load_before}; after: {load_after}.");
    println!();
    print!("{}", report.markdown());
    if !failures.is_empty() {
        println!();
        println!("Failed:");
        for f in &failures {
            println!("- {f}");
        }
    }
    Ok(failures.is_empty())
}

/// CPU count and model, memory, from `/proc`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    format!("{cpus} CPUs ({model}), {mem_gib:.1} GiB RAM")
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line() {
        let args = |s: &str| parse_args(s.split_whitespace().map(str::to_owned));
        let a = args("--quick --nats nats://x:1 --only nats/,raw_ --only stream").unwrap();
        assert!(a.quick);
        assert_eq!(a.nats.as_deref(), Some("nats://x:1"));
        assert_eq!(a.only, ["nats/", "raw_", "stream"]);
        assert!(!args("").unwrap().quick);
        assert!(args("--bogus").is_err());
        assert!(args("--redis").is_err());
        let p = args("--memory-probe redis 10").unwrap();
        assert_eq!(p.memory_probe, Some((BusKind::Redis, 10)));
    }

    #[test]
    fn only_selects_cases_and_brokers() {
        let only = vec!["nats/rpc".to_owned()];
        assert!(suite::wants(&only, BusKind::Nats, "rpc_direct"));
        assert!(!suite::wants(&only, BusKind::Redis, "rpc_direct"));
        assert!(suite::wants(&[], BusKind::Local, "stream"));
    }
}
