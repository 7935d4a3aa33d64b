//! A throwaway `mosquitto` MQTT broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::TestkitError;
use crate::process::{Broker, Proc, find_binary, wait_ready};

const BINARY: &str = "mosquitto";

/// Options of a [`MosquittoServer`].
#[derive(Clone, Debug, Default)]
pub struct MosquittoOptions {
    /// Require this user name and password (a password file made with `mosquitto_passwd`;
    /// anonymous clients are refused).
    pub credentials: Option<(String, String)>,
    /// The largest payload the broker accepts (`message_size_limit`).
    pub message_size_limit: Option<usize>,
    /// The largest packet the broker accepts (`max_packet_size`), announced to MQTT 5 clients.
    pub max_packet_size: Option<usize>,
    /// Serve TLS only, with this certificate chain and private key (PEM files).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// A `mosquitto` on a free loopback port, persisting nothing, killed on drop.
#[derive(Debug)]
pub struct MosquittoServer {
    options: MosquittoOptions,
    broker: Broker,
}

impl MosquittoServer {
    /// Starts a broker with default options (anonymous access) and waits until it answers an
    /// MQTT CONNECT.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `mosquitto` is not installed, or a start failure.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(MosquittoOptions::default())
    }

    /// Starts a broker with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(options: MosquittoOptions) -> Result<Self, TestkitError> {
        let broker = Broker::launch(
            BINARY,
            "mosquitto",
            "MOSQUITTO_BIN",
            &|binary, dir, port| spawn(binary, dir, port, &options),
        )?;
        Ok(MosquittoServer { options, broker })
    }

    /// `mqtt://127.0.0.1:<port>` (`mqtts://` with TLS; with the credentials when some are
    /// set).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        match &self.options.credentials {
            Some((user, pass)) => {
                format!("{scheme}://{user}:{pass}@127.0.0.1:{}", self.broker.port)
            }
            None => format!("{scheme}://127.0.0.1:{}", self.broker.port),
        }
    }

    broker_controls!();

    /// Starts the broker again on the same port (killing it first if it runs).
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
    options: &MosquittoOptions,
) -> Result<Proc, TestkitError> {
    let io = |source| TestkitError::Io {
        binary: BINARY,
        source,
    };
    let log_path = dir.path().join("mosquitto.log");
    let _ = std::fs::remove_file(&log_path);
    // `set_tcp_nodelay`: a PUBACK followed by a reply to the same client would otherwise wait
    // for a delayed ACK (40 ms) under Nagle's algorithm; production brokers want it too.
    // `user root` keeps a broker started by root as root (it would switch to the `mosquitto`
    // user and lose access to the scratch directory); it is ignored when not run as root.
    let mut config = format!(
        "listener {port} 127.0.0.1\npersistence false\nuser root\nset_tcp_nodelay true\n\
         log_dest file {}\n",
        log_path.display()
    );
    if let Some((cert, key)) = &options.tls {
        config.push_str(&format!(
            "certfile {}\nkeyfile {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(limit) = options.message_size_limit {
        config.push_str(&format!("message_size_limit {limit}\n"));
    }
    if let Some(limit) = options.max_packet_size {
        config.push_str(&format!("max_packet_size {limit}\n"));
    }
    match &options.credentials {
        Some((user, pass)) => {
            let passwd = dir.path().join("passwd");
            let tool = find_binary("mosquitto_passwd", "mosquitto", "MOSQUITTO_PASSWD_BIN")?;
            let status = Command::new(tool)
                .args(["-c", "-b"])
                .arg(&passwd)
                .args([user, pass])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(io)?;
            if !status.success() {
                return Err(io(std::io::Error::other(format!(
                    "mosquitto_passwd failed: {status}"
                ))));
            }
            config.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwd.display()
            ));
        }
        None => config.push_str("allow_anonymous true\n"),
    }
    let config_path = dir.path().join("mosquitto.conf");
    std::fs::write(&config_path, config).map_err(io)?;
    let mut child = Proc::spawn(BINARY, Command::new(binary).arg("-c").arg(&config_path))?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // A TLS listener is ready once it accepts connections (the probe speaks plain MQTT).
    let ready = || match options.tls {
        Some(_) => crate::process::port_open(port),
        None => answers_connect(port),
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

/// True once the broker answers an MQTT 3.1.1 CONNECT with a CONNACK (accepted or, with
/// credentials required, refused: either way it is serving).
fn answers_connect(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    // CONNECT: protocol "MQTT" level 4, clean session, keepalive 10 s, client ID "ready".
    const CONNECT: &[u8] = &[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 5, b'r', b'e', b'a', b'd', b'y',
    ];
    if stream.write_all(CONNECT).is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    let ready = matches!(stream.read(&mut buf), Ok(n) if n >= 1 && buf[0] == 0x20);
    if ready {
        // DISCONNECT, so the broker logs a clean goodbye.
        let _ = stream.write_all(&[0xe0, 0]);
    }
    ready
}
