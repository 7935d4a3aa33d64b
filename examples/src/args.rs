//! The command line every example shares: `--bus URL`, `--role both|server|client`, `--help`.
//!
//! Hand-written rather than clap: three flags do not justify a dependency and its build time.

use std::sync::Arc;

use psrpc::bus::{Bus, LocalBus};

/// Which half of an example this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// Servers and callers in this one process (the default: a one-command demo).
    #[default]
    Both,
    /// Only the servers: serve until Ctrl-C.
    Server,
    /// Only the callers: call the servers another process runs, print, exit.
    Client,
}

impl Role {
    /// True when this process runs the servers.
    pub fn serves(self) -> bool {
        self != Role::Client
    }

    /// True when this process runs the callers.
    pub fn calls(self) -> bool {
        self != Role::Server
    }
}

/// An example's parsed command line.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Args {
    /// The broker URL of `--bus`; the in-process bus without it.
    pub bus: Option<String>,
    /// The `--role` (default [`Role::Both`]).
    pub role: Role,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the example.
    Run(Args),
    /// Print the usage and exit.
    Help,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for an unknown argument, a flag without its value, an unknown role, or a split
/// role without a broker (an in-process bus is not shared between processes).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.into())),
            _ => (arg, None),
        };
        let mut value = |name: &str, example: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value, like {name} {example}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--bus" => parsed.bus = Some(value("--bus", "nats://127.0.0.1:4222")?),
            "--role" => {
                parsed.role = match value("--role", "server")?.as_str() {
                    "both" => Role::Both,
                    "server" => Role::Server,
                    "client" => Role::Client,
                    other => {
                        return Err(format!(
                            "unknown role {other:?}: use both, server or client"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let local = parsed.bus.as_deref().is_none_or(|url| url == "local");
    if parsed.role != Role::Both && local {
        return Err(
            "--role server and --role client need --bus URL: an in-process bus is not shared \
             between processes"
                .into(),
        );
    }
    Ok(Command::Run(parsed))
}

/// The usage text of example `name`, whose own description is `about`.
pub fn usage(name: &str, about: &str) -> String {
    format!(
        "{about}\n\n\
         Usage: {name} [--bus URL] [--role both|server|client]\n\n\
         Options:\n  \
         --bus URL     the broker: nats://HOST:PORT, redis://HOST:PORT, mqtt://[USER:PASS@]HOST:PORT,\n                \
         amqp://USER:PASS@HOST:PORT/VHOST; without it, an in-process bus\n  \
         --role ROLE   both (default): servers and callers in this one process;\n                \
         server: run the servers until Ctrl-C;\n                \
         client: call the servers another process runs, then exit\n  \
         -h, --help    print this help\n\n\
         Two terminals, one broker:\n  \
         {name} --bus nats://127.0.0.1:4222 --role server\n  \
         {name} --bus nats://127.0.0.1:4222 --role client\n"
    )
}

/// The parsed command line of example `name`; prints the usage and exits on `--help` (status
/// 0) or a bad command line (status 2, with the message).
pub fn args_or_exit(name: &str, about: &str) -> Args {
    match parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", usage(name, about));
            std::process::exit(0);
        }
        Err(msg) => {
            eprintln!("error: {msg}\n\n{}", usage(name, about));
            std::process::exit(2);
        }
    }
}

/// The bus `args` names, or the end of the program with the message and exit status 2.
pub async fn connect_or_exit(args: &Args) -> Arc<dyn Bus> {
    let bus = match &args.bus {
        None => Ok(Arc::new(LocalBus::new()) as Arc<dyn Bus>),
        Some(url) => crate::connect(url).await,
    };
    bus.unwrap_or_else(|msg| {
        eprintln!("error: {msg}");
        std::process::exit(2);
    })
}

/// Waits for Ctrl-C (or SIGTERM), after printing `serving: <what>` — the line a script (or
/// a test) waits for before starting a client.
///
/// # Cancel safety
/// Cancel safe: dropping the future stops listening for the signals.
pub async fn serve_until_stopped(what: &str) {
    use std::io::Write;
    println!("serving: {what} (Ctrl-C to stop)");
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
    println!("stopping");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list(list: &[&str]) -> Result<Command, String> {
        parse(list.iter().map(|s| (*s).to_owned()))
    }

    fn run(bus: Option<&str>, role: Role) -> Result<Command, String> {
        Ok(Command::Run(Args {
            bus: bus.map(str::to_owned),
            role,
        }))
    }

    #[test]
    fn defaults_and_both_spellings() {
        assert_eq!(parse_list(&[]), run(None, Role::Both));
        assert_eq!(
            parse_list(&["--bus", "nats://h:1", "--role", "server"]),
            run(Some("nats://h:1"), Role::Server)
        );
        assert_eq!(
            parse_list(&["--role=client", "--bus=redis://h:2"]),
            run(Some("redis://h:2"), Role::Client)
        );
        assert_eq!(parse_list(&["--bus", "x", "--help"]), Ok(Command::Help));
        assert_eq!(parse_list(&["-h"]), Ok(Command::Help));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for (args, needle) in [
            (&["--bus"][..], "--bus needs a value"),
            (&["--role"], "--role needs a value"),
            (&["--role", "proxy", "--bus", "nats://h"], "unknown role"),
            (&["-v"], "unknown argument \"-v\""),
            (&["--role", "server"], "need --bus URL"),
            (&["--role", "client", "--bus", "local"], "need --bus URL"),
        ] {
            let err = parse_list(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
