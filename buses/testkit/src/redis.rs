//! A throwaway `redis-server`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::TestkitError;
use crate::process::{Broker, Proc, wait_ready};

const BINARY: &str = "redis-server";

/// Options of a [`RedisServer`].
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// Require this password (`requirepass`).
    pub password: Option<String>,
    /// Persist with the append-only file, synced on every write (`appendonly yes`,
    /// `appendfsync always`): what a reply acknowledged survives a SIGKILL and
    /// [`RedisServer::restart`] (the data directory is kept across restarts).
    pub persistence: bool,
    /// Require this ACL user and password (with every permission); the default user is
    /// switched off.
    pub acl_user: Option<(String, String)>,
    /// Serve TLS only (`rediss://`), with this certificate chain, private key and CA (PEM
    /// files); clients must present a certificate signed by the CA.
    pub tls: Option<RedisTls>,
}

/// The PEM files of a TLS [`RedisServer`].
#[derive(Clone, Debug)]
pub struct RedisTls {
    /// The server's certificate chain.
    pub cert: std::path::PathBuf,
    /// The server's private key.
    pub key: std::path::PathBuf,
    /// The CA client certificates must be signed by.
    pub client_ca: std::path::PathBuf,
}

/// A `redis-server` on a free loopback port, killed on drop; it persists nothing unless
/// [`RedisOptions::persistence`] is set.
#[derive(Debug)]
pub struct RedisServer {
    options: RedisOptions,
    /// Cluster mode (`--cluster-enabled yes`, node timeout in ms), set by [`RedisCluster`](crate::RedisCluster).
    cluster: Option<u64>,
    broker: Broker,
}

impl RedisServer {
    /// Starts a server with default options and waits until it answers `PING`.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `redis-server` is not installed, or a start failure.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(options: RedisOptions) -> Result<Self, TestkitError> {
        Self::launch(options, None)
    }

    /// Starts a server, in cluster mode with this node timeout (ms) when `cluster` is set.
    pub(crate) fn launch(
        options: RedisOptions,
        cluster: Option<u64>,
    ) -> Result<Self, TestkitError> {
        let broker = Broker::launch(
            BINARY,
            "redis-server",
            "REDIS_SERVER_BIN",
            &|binary, dir, port| spawn(binary, dir, port, &options, cluster),
        )?;
        Ok(RedisServer {
            options,
            cluster,
            broker,
        })
    }

    /// `redis://127.0.0.1:<port>/` (with the ACL user or password when one is set).
    pub fn url(&self) -> String {
        let port = self.broker.port;
        match (&self.options.acl_user, &self.options.password) {
            (Some((user, pass)), _) => format!("redis://{user}:{pass}@127.0.0.1:{port}/"),
            (None, Some(pass)) => format!("redis://:{pass}@127.0.0.1:{port}/"),
            (None, None) => format!("redis://127.0.0.1:{port}/"),
        }
        .replacen(
            "redis://",
            if self.options.tls.is_some() {
                "rediss://"
            } else {
                "redis://"
            },
            1,
        )
    }

    broker_controls!();

    /// Starts the server again on the same port (killing it first if it runs).
    ///
    /// # Errors
    /// A start failure.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let options = &self.options;
        let cluster = self.cluster;
        self.broker
            .restart(&|binary, dir, port| spawn(binary, dir, port, options, cluster))
    }
}

fn spawn(
    binary: &Path,
    dir: &tempfile::TempDir,
    port: u16,
    options: &RedisOptions,
    cluster: Option<u64>,
) -> Result<Proc, TestkitError> {
    let log_path = dir.path().join("redis.log");
    let _ = std::fs::remove_file(&log_path);
    let mut command = Command::new(binary);
    match &options.tls {
        None => command.args(["--port", &port.to_string()]),
        Some(tls) => command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&tls.cert)
            .arg("--tls-key-file")
            .arg(&tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&tls.client_ca)
            .args(["--tls-auth-clients", "yes"]),
    };
    command
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log_path);
    if let Some(node_timeout) = cluster {
        // The node file lives in the kept data directory, so a restarted node rejoins as itself.
        command
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.path().join("nodes.conf"))
            .args(["--cluster-node-timeout", &node_timeout.to_string()])
            // Any replica may take over, however long ago it last heard from its master.
            .args(["--cluster-replica-validity-factor", "0"]);
    }
    if options.persistence {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    if let Some(pass) = &options.password {
        command.args(["--requirepass", pass]);
    }
    if let Some((user, pass)) = &options.acl_user {
        // Arguments up to the next `--` form one config line.
        command.args([
            "--user",
            user,
            "on",
            &format!(">{pass}"),
            "~*",
            "&*",
            "+@all",
        ]);
        command.args(["--user", "default", "off"]);
    }
    let mut child = Proc::spawn(BINARY, &mut command)?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // A TLS port does not answer a plain PING: its log line and open port tell instead.
    let ready = || match options.tls {
        None => answers_ping(port),
        Some(_) => {
            log().contains("Ready to accept connections")
                && TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
        }
    };
    match wait_ready(BINARY, &mut child, ready, log) {
        Ok(()) => Ok(Proc::new(child)),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// True once the server answers PING (`+PONG`, or `-NOAUTH` when a password is required).
pub(crate) fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
