//! A throwaway `rabbitmq-server` node.
//!
//! RabbitMQ takes seconds to boot, so tests share one node per test binary
//! ([`RabbitMqServer::shared`]) and isolate themselves with a fresh virtual host each
//! ([`RabbitMqServer::fresh_url`]); a test that kills its broker starts one of its own.
//!
//! The node runs under a small `sh` supervisor whose standard input is a pipe from the test
//! process: the supervisor starts the node in a process group of its own, kills and restarts it
//! on request, and when the pipe closes (the test process ended, however it ended: the shared
//! node lives in a static that is never dropped) kills the whole group, `beam.smp` and its
//! helpers included, and removes the node's files.
//!
//! Every node also serves AMQP over TLS on a second port ([`RabbitMqServer::tls`]), with a
//! certificate authority, a server certificate and a client certificate made at start with
//! rcgen: clients may present the client certificate (it is verified) or none.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::process::{find_binary, free_port};

const BINARY: &str = "rabbitmq-server";
/// The user every node of the kit has, with this password, on every virtual host it makes.
pub const RABBITMQ_USER: &str = "psrpc";
/// `RABBITMQ_USER`'s password.
pub const RABBITMQ_PASSWORD: &str = "psrpc";
/// RabbitMQ's salted SHA-256 of "psrpc" (4-byte salt, then SHA-256 of salt and password).
const PASSWORD_HASH: &str = "cHNycHngj5m0ZeGMdRIQrXAr2OcTqhvyskJkInZrvEk2CpAW";
/// Virtual hosts made at boot (each costs the node ~0.1 s to start); more are made in batches.
const BOOT_VHOSTS: usize = 24;
/// Virtual hosts made per `rabbitmqctl eval` once the boot ones are used up (~2 s a call).
const VHOST_BATCH: usize = 16;
/// A cold node boots in 5 to 10 s on a busy two-core machine; leave room.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The node's supervisor: starts the node in a group of its own, `kill` and `start` on
/// request, and on end of input kills the group and removes the node's directory.
const SUPERVISOR: &str = r#"
dir=$1; shift
start() { setsid "$@" </dev/null >>"$dir/server.out" 2>&1 & pid=$!; echo "$pid"; }
start "$@"
while read -r cmd; do
  case "$cmd" in
    kill) kill -KILL "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null; echo killed ;;
    start) start "$@" ;;
  esac
done
kill -KILL "-$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// Options of a [`RabbitMqServer`].
#[derive(Clone, Debug, Default)]
pub struct RabbitMqOptions {
    /// The largest message the node accepts (`max_message_size`; RabbitMQ's default applies
    /// when unset).
    pub max_message_size: Option<usize>,
}

/// A `rabbitmq-server` node on free loopback ports, with a user `psrpc`/`psrpc`, stopped
/// (process tree and files) on drop or when the test process exits.
#[derive(Debug)]
pub struct RabbitMqServer {
    port: u16,
    tls: RabbitMqTls,
    node: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    ctl: PathBuf,
    supervisor: Mutex<Supervisor>,
    vhosts: Mutex<VhostPool>,
}

/// The TLS side of a [`RabbitMqServer`]: its port and the PEM material made for it.
#[derive(Clone)]
pub struct RabbitMqTls {
    port: u16,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl std::fmt::Debug for RabbitMqTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqTls")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RabbitMqTls {
    /// The TLS listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificate authority that signed the server and client certificates (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate the node accepts (PEM), signed by [`ca_pem`](Self::ca_pem).
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The private key of [`client_cert_pem`](Self::client_cert_pem) (PKCS#8 PEM).
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }
}

/// Makes a CA, a server certificate for `127.0.0.1` and `localhost` and a client certificate,
/// writes the server's files into `dir` and returns the client's side.
fn make_tls(dir: &Path, port: u16) -> Result<RabbitMqTls, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "psrpc testkit CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let leaf = |names: Vec<String>, usage| -> Result<(String, String), String> {
        let mut params = CertificateParams::new(names).map_err(err)?;
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &ca).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert_pem, client_key_pem) = leaf(
        vec!["psrpc-client".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let ca_pem = ca.pem();
    for (name, pem) in [
        ("ca.pem", &ca_pem),
        ("server.pem", &server_cert),
        ("server-key.pem", &server_key),
    ] {
        std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    Ok(RabbitMqTls {
        port,
        ca_pem,
        client_cert_pem,
        client_key_pem,
    })
}

#[derive(Debug)]
struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    running: bool,
}

#[derive(Debug, Default)]
struct VhostPool {
    made: usize,
    taken: usize,
}

impl RabbitMqServer {
    /// The node shared by every test of this test binary, started on first use.
    ///
    /// # Errors
    /// A start failure (each call retries when an earlier start failed).
    pub fn shared() -> Result<&'static RabbitMqServer, TestkitError> {
        static SHARED: OnceLock<RabbitMqServer> = OnceLock::new();
        static STARTING: Mutex<()> = Mutex::new(());
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let server = Self::start()?;
        Ok(SHARED.get_or_init(|| server))
    }

    /// Starts a node of its own with default options and waits until it completes an AMQP
    /// handshake.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] when `rabbitmq-server` is not installed, or a start
    /// failure.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(RabbitMqOptions::default())
    }

    /// Starts a node of its own with `options`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(options: RabbitMqOptions) -> Result<Self, TestkitError> {
        let io = |source| TestkitError::Io {
            binary: BINARY,
            source,
        };
        let server = server_binary()?;
        let ctl = server.with_file_name("rabbitmqctl");
        let mut last_err = None;
        // A probed port can be taken before the node binds it: try a few.
        for _ in 0..3 {
            let tmp = tempfile::tempdir().map_err(io)?;
            let dir = tmp.path().to_path_buf();
            let port = free_port().map_err(io)?;
            let dist_port = free_port().map_err(io)?;
            let tls_port = free_port().map_err(io)?;
            let node = format!("psrpc-{}@localhost", unique());
            let tls = make_tls(&dir, tls_port).map_err(|e| io(std::io::Error::other(e)))?;
            write_config(&dir, port, tls_port, &options).map_err(io)?;
            let supervisor = spawn(&server, &dir, port, dist_port, &node).map_err(io)?;
            let server = RabbitMqServer {
                port,
                tls,
                node,
                dir,
                _tmp: tmp,
                ctl: ctl.clone(),
                supervisor: Mutex::new(supervisor),
                vhosts: Mutex::new(VhostPool {
                    made: BOOT_VHOSTS,
                    taken: 0,
                }),
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or(TestkitError::NotReady {
            binary: BINARY,
            seconds: 0,
            detail: "no attempt was made".into(),
        }))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener and the certificates made for it.
    pub fn tls(&self) -> &RabbitMqTls {
        &self.tls
    }

    /// [`fresh_url`](Self::fresh_url) through the TLS listener: `amqps://…@127.0.0.1:<tls
    /// port>/<vhost>`. A client must trust [`RabbitMqTls::ca_pem`].
    ///
    /// # Errors
    /// As [`fresh_url`](Self::fresh_url).
    pub fn fresh_tls_url(&self) -> Result<String, TestkitError> {
        let url = self.fresh_url()?;
        let vhost = url.rsplit('/').next().unwrap_or_default();
        Ok(format!(
            "amqps://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@127.0.0.1:{}/{vhost}",
            self.tls.port
        ))
    }

    /// The node name (`psrpc-…@localhost`), for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `amqp://psrpc:psrpc@127.0.0.1:<port>/%2f`: the default virtual host `/`.
    pub fn url(&self) -> String {
        self.url_for("%2f")
    }

    /// The URL of a virtual host no other caller got: tests on one node stay apart.
    ///
    /// # Errors
    /// [`TestkitError::Io`] or [`TestkitError::NotReady`] when more virtual hosts could not be
    /// made.
    pub fn fresh_url(&self) -> Result<String, TestkitError> {
        let mut pool = self.vhosts.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.taken == pool.made {
            self.make_vhosts(pool.made, VHOST_BATCH)?;
            pool.made += VHOST_BATCH;
        }
        let vhost = format!("t{}", pool.taken);
        pool.taken += 1;
        Ok(self.url_for(&vhost))
    }

    fn url_for(&self, vhost: &str) -> String {
        format!(
            "amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@127.0.0.1:{}/{vhost}",
            self.port
        )
    }

    /// True while the node runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.supervisor().running
    }

    /// Kills the node with SIGKILL (its whole process tree; no goodbye to clients) and waits
    /// until it is gone.
    pub fn kill(&self) {
        let mut sup = self.supervisor();
        if !sup.running {
            return;
        }
        sup.send("kill");
        let _ = sup.read_line();
        sup.running = false;
        drop(sup);
        // The group got SIGKILL; its sockets close once the kernel has torn `beam.smp` down.
        let start = Instant::now();
        while port_accepts(self.port) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the node again on the same port, with its data (killing it first if it runs),
    /// and waits until it completes an AMQP handshake.
    ///
    /// # Errors
    /// A start failure.
    pub fn restart(&self) -> Result<(), TestkitError> {
        self.kill();
        {
            let mut sup = self.supervisor();
            sup.send("start");
            let _ = sup.read_line();
            sup.running = true;
        }
        self.wait_ready()
    }

    fn supervisor(&self) -> std::sync::MutexGuard<'_, Supervisor> {
        self.supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_ready(&self) -> Result<(), TestkitError> {
        let start = Instant::now();
        loop {
            // The TLS listener starts with the plain one; check it too.
            if amqp_handshake(self.port) && port_accepts(self.tls.port) {
                return Ok(());
            }
            let exited = matches!(self.supervisor().child.try_wait(), Ok(Some(_)));
            if exited || start.elapsed() > READY_TIMEOUT {
                return Err(TestkitError::NotReady {
                    binary: BINARY,
                    seconds: start.elapsed().as_secs(),
                    detail: self.log_tail(),
                });
            }
            // Polling interval of a readiness probe, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Makes virtual hosts `t<first>`… with full permissions for the kit's user, in one
    /// `rabbitmqctl eval` (each CLI call starts an Erlang VM: batching saves seconds).
    fn make_vhosts(&self, first: usize, count: usize) -> Result<(), TestkitError> {
        let io = |source| TestkitError::Io {
            binary: "rabbitmqctl",
            source,
        };
        let expr = format!(
            "lists:foreach(fun(N) -> V = list_to_binary(\"t\" ++ integer_to_list(N)), \
             ok = rabbit_vhost:add(V, <<\"{u}\">>), \
             ok = rabbit_auth_backend_internal:set_permissions(<<\"{u}\">>, V, \
             <<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"{u}\">>) end, \
             lists:seq({first}, {last})), done.",
            u = RABBITMQ_USER,
            last = first + count - 1,
        );
        let cli_port = free_port().map_err(io)?;
        let output = Command::new(&self.ctl)
            .args(["-n", &self.node, "eval", &expr])
            .envs(node_env(&self.dir))
            .env("RABBITMQ_CTL_DIST_PORT_MIN", cli_port.to_string())
            .env("RABBITMQ_CTL_DIST_PORT_MAX", cli_port.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(io)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestkitError::NotReady {
                binary: "rabbitmqctl",
                seconds: 0,
                detail: format!(
                    "eval failed ({}): {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }
}

impl Drop for RabbitMqServer {
    fn drop(&mut self) {
        let mut sup = self.supervisor();
        // End of input: the supervisor kills the node's group and removes its files.
        sup.stdin = None;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = sup.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = sup.child.kill();
        let _ = sup.child.wait();
    }
}

impl Supervisor {
    fn send(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line)
    }
}

/// The server script: the one in RabbitMQ's own directory, since Debian's wrapper on PATH
/// switches to the `rabbitmq` user when run as root.
fn server_binary() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("RABBITMQ_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let debian = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.is_file() {
        return Ok(debian.to_path_buf());
    }
    find_binary(BINARY, "rabbitmq-server", "RABBITMQ_SERVER_BIN")
}

/// A process-unique suffix for node names and directories.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the node and the CLI share: the cookie lives in `HOME`, no system-wide env file.
fn node_env(dir: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("HOME", dir.into()),
        (
            "RABBITMQ_CONF_ENV_FILE",
            dir.join("rabbitmq-env.conf").into(),
        ),
    ]
}

fn write_config(
    dir: &Path,
    port: u16,
    tls_port: u16,
    options: &RabbitMqOptions,
) -> std::io::Result<()> {
    let defs = dir.join("definitions.json");
    // verify_peer without fail_if_no_peer_cert: a client certificate is checked when given.
    let mut config = format!(
        "listeners.tcp.default = 127.0.0.1:{port}\n\
         listeners.ssl.default = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {ca}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {key}\n\
         ssl_options.verify = verify_peer\n\
         ssl_options.fail_if_no_peer_cert = false\n\
         loopback_users = none\n\
         load_definitions = {}\n\
         log.console = false\n\
         log.file.level = warning\n",
        defs.display(),
        ca = dir.join("ca.pem").display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server-key.pem").display(),
    );
    if let Some(max) = options.max_message_size {
        config.push_str(&format!("max_message_size = {max}\n"));
    }
    std::fs::write(dir.join("rabbitmq.conf"), config)?;
    std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    let vhosts: Vec<String> = std::iter::once("/".to_string())
        .chain((0..BOOT_VHOSTS).map(|i| format!("t{i}")))
        .collect();
    let list = |f: &dyn Fn(&str) -> String| vhosts.iter().map(|v| f(v)).collect::<Vec<_>>();
    let definitions = format!(
        "{{\"users\":[{{\"name\":\"{RABBITMQ_USER}\",\"password_hash\":\"{PASSWORD_HASH}\",\
         \"hashing_algorithm\":\"rabbit_password_hashing_sha256\",\"tags\":[\"administrator\"]}}],\
         \"vhosts\":[{}],\"permissions\":[{}]}}",
        list(&|v| format!("{{\"name\":\"{v}\"}}")).join(","),
        list(&|v| format!(
            "{{\"user\":\"{RABBITMQ_USER}\",\"vhost\":\"{v}\",\"configure\":\".*\",\
             \"write\":\".*\",\"read\":\".*\"}}"
        ))
        .join(","),
    );
    std::fs::write(defs, definitions)
}

fn spawn(
    server: &Path,
    dir: &Path,
    port: u16,
    dist_port: u16,
    node: &str,
) -> std::io::Result<Supervisor> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("psrpc-rabbitmq-supervisor")
        .arg(dir)
        .arg(server)
        .envs(node_env(dir))
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
        // The supervisor gets a group of its own, apart from the test process's signals.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("supervisor pipes missing"));
    };
    let mut supervisor = Supervisor {
        child,
        stdin: Some(stdin),
        stdout: BufReader::new(stdout),
        running: true,
    };
    // The first line is the node's process group: it started.
    supervisor.read_line()?;
    Ok(supervisor)
}

fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// True once the node answers an AMQP 0-9-1 protocol header with `connection.start` (a method
/// frame on channel 0), which it does only once its listeners are up.
fn amqp_handshake(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut header = [0u8; 7];
    if stream.read_exact(&mut header).is_err() {
        return false;
    }
    // Frame type 1 (method), channel 0.
    header[0] == 1 && header[1] == 0 && header[2] == 0
}
