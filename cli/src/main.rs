//! `psrpc`: list, inspect and call psrpc services from a terminal.
//!
//! ```text
//! psrpc ls    --bus nats://127.0.0.1:4222 [SERVICE] [--json]
//! psrpc info  --bus URL [SERVICE] [--server ID] [--json]
//! psrpc stats --bus URL [SERVICE] [--server ID] [--sum] [--json]
//! psrpc call  --bus URL --proto FILE [-I DIR] SERVICE.METHOD [--topic T] [--timeout D] [--meta K=V] '{json}'
//! psrpc sub   --bus URL --proto FILE [-I DIR] SERVICE.METHOD [--topic T] [--count N]
//! psrpc pub   --bus URL --proto FILE [-I DIR] SERVICE.METHOD [--topic T] '{json}'
//! ```
//!
//! Every error is one line on stderr and a non-zero exit status.

mod bus;
mod introspect;
mod raw;
mod rpc;
mod schema;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// List, inspect and call psrpc services over a message bus.
#[derive(Parser, Debug)]
#[command(name = "psrpc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Services and their servers, with health, version, uptime and load.
    Ls(Introspect),
    /// What each server is and serves.
    Info(Introspect),
    /// Each server's counters and per-method latency.
    Stats(StatsArgs),
    /// Calls a method; multi calls print one line per server.
    Call(CallArgs),
    /// Prints the messages of a subscription as JSON lines.
    Sub(SubArgs),
    /// Publishes one message to the subscribers of a subscription.
    Pub(PubArgs),
}

/// Where the bus is.
#[derive(Args, Debug, Clone)]
struct BusArgs {
    /// The bus: nats://HOST:PORT, redis://HOST:PORT, mqtt://HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST.
    #[arg(long)]
    bus: String,
    /// How long connecting may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

#[derive(Args, Debug)]
struct Introspect {
    #[command(flatten)]
    bus: BusArgs,
    /// Only this service.
    service: Option<String>,
    /// Only this server.
    #[arg(long)]
    server: Option<String>,
    /// How long to wait for servers to answer.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatsArgs {
    #[command(flatten)]
    inner: Introspect,
    /// Sum the counters of each service's servers.
    #[arg(long)]
    sum: bool,
}

/// Which method, described by which `.proto`.
#[derive(Args, Debug)]
struct MethodArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// The `.proto` file declaring the service (compiled at run time).
    #[arg(long)]
    proto: std::path::PathBuf,
    /// Include directories for imports (the proto file's own directory is always included).
    #[arg(short = 'I', long = "include")]
    includes: Vec<std::path::PathBuf>,
    /// SERVICE.METHOD (the service's short or fully qualified name).
    method: String,
    /// Topic (repeat for a topic tuple).
    #[arg(long = "topic")]
    topics: Vec<String>,
}

#[derive(Args, Debug)]
struct CallArgs {
    #[command(flatten)]
    target: MethodArgs,
    /// The request as JSON (default `{}`).
    request: Option<String>,
    /// How long the call may take (multi calls collect answers until then).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    metadata: Vec<(String, String)>,
    /// For multi calls: end once every server discovery knows has answered.
    #[arg(long)]
    early: bool,
}

#[derive(Args, Debug)]
struct SubArgs {
    #[command(flatten)]
    target: MethodArgs,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<usize>,
    /// Exit after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[derive(Args, Debug)]
struct PubArgs {
    #[command(flatten)]
    target: MethodArgs,
    /// The message as JSON.
    message: String,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("metadata must be KEY=VALUE, got {s:?}"))
}

/// A one-line error for the user.
pub(crate) type Fail = String;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            // clap's own message is several lines (usage, hints): keep its first.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            return fail(first.trim_start_matches("error: ").to_owned());
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Ls(args) => introspect::ls(args).await,
            Command::Info(args) => introspect::info(args).await,
            Command::Stats(args) => introspect::stats(args).await,
            Command::Call(args) => rpc::call(args).await,
            Command::Sub(args) => rpc::sub(args).await,
            Command::Pub(args) => rpc::publish(args).await,
        }
    });
    // Background tasks of broker clients must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Ok(code) => code,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    let line = message.replace('\n', " ");
    eprintln!("psrpc: {line}");
    ExitCode::from(1)
}
