//! A throwaway `nats-server`.

use std::path::Path;
use std::process::Command;

use crate::TestkitError;
use crate::process::{Broker, Proc, wait_ready};

const BINARY: &str = "nats-server";

/// Options of a [`NatsServer`].
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// Require this user name and password.
    pub credentials: Option<(String, String)>,
    /// The largest message the server accepts (the server default is 1 MiB).
    pub max_payload: Option<usize>,
    /// Enable JetStream, with its store in the server's scratch directory, which is kept
    /// across [`NatsServer::restart`]: persisted streams survive a SIGKILL and restart.
    pub jetstream: bool,
}

/// A `nats-server` on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    options: NatsOptions,
    broker: Broker,
}

impl NatsServer {
    /// Starts a server with default options and waits until it accepts connections.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `nats-server` is not installed, or a start failure.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(NatsOptions::default())
    }

    /// Starts a server with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(options: NatsOptions) -> Result<Self, TestkitError> {
        let broker = Broker::launch(
            BINARY,
            "nats-server",
            "NATS_SERVER_BIN",
            &|binary, dir, port| spawn(binary, dir, port, &options),
        )?;
        Ok(NatsServer { options, broker })
    }

    /// `nats://127.0.0.1:<port>` (without credentials).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.broker.port)
    }

    broker_controls!();

    /// Starts the server again on the same port (killing it first if it runs).
    ///
    /// # Errors
    /// A start failure.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let options = &self.options;
        self.broker
            .restart(&|binary, dir, port| spawn(binary, dir, port, options))
    }
}

fn spawn(
    binary: &Path,
    dir: &tempfile::TempDir,
    port: u16,
    options: &NatsOptions,
) -> Result<Proc, TestkitError> {
    let io = |source| TestkitError::Io {
        binary: BINARY,
        source,
    };
    let mut config = format!("listen: \"127.0.0.1:{port}\"\n");
    if let Some(max) = options.max_payload {
        config.push_str(&format!("max_payload: {max}\n"));
    }
    if let Some((user, pass)) = &options.credentials {
        config.push_str(&format!(
            "authorization {{\n  user: \"{user}\"\n  password: \"{pass}\"\n}}\n"
        ));
    }
    if options.jetstream {
        let store = dir.path().join("js");
        config.push_str(&format!("jetstream {{\n  store_dir: {:?}\n}}\n", store));
    }
    let config_path = dir.path().join("nats.conf");
    std::fs::write(&config_path, config).map_err(io)?;
    let log_path = dir.path().join("nats.log");
    let _ = std::fs::remove_file(&log_path);
    let child = Proc::spawn(
        BINARY,
        Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("-l")
            .arg(&log_path),
    )?;
    let mut proc_child = child;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    match wait_ready(BINARY, &mut proc_child, || nats_ready(port), log) {
        Ok(()) => Ok(Proc::new(proc_child)),
        Err(err) => {
            let _ = proc_child.kill();
            let _ = proc_child.wait();
            Err(err)
        }
    }
}

/// Ready when the port speaks NATS (its greeting is an `INFO` line), not merely open: a port
/// another test's broker took between probing and binding is open too.
fn nats_ready(port: u16) -> bool {
    use std::io::Read;
    let addr = ([127, 0, 0, 1], port).into();
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}
