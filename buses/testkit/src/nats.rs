//! A throwaway `nats-server`.

use std::path::{Path, PathBuf};
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
    /// Require this token (instead of [`credentials`](Self::credentials)).
    pub token: Option<String>,
    /// Also admit users holding the seeds of these NKey public keys (`U…`); combined with
    /// [`credentials`](Self::credentials) in one user list.
    pub nkeys: Vec<String>,
    /// Serve TLS only, with this certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// With [`tls`](Self::tls): require client certificates signed by this CA (PEM file).
    pub tls_client_ca: Option<PathBuf>,
    /// Operator mode (decentralised JWT auth): trust this operator and resolve its accounts
    /// from memory; clients authenticate with user credentials files. See
    /// [`TestOperator`](crate::TestOperator). Replaces the other auth options.
    pub trust: Option<NatsTrust>,
}

/// The operator JWT and account JWTs a server in operator mode trusts (a `MEMORY` resolver
/// preloaded with the accounts).
#[derive(Clone, Debug)]
pub struct NatsTrust {
    /// The operator's self-signed JWT.
    pub operator_jwt: String,
    /// Account public keys (`A…`) and their JWTs, signed by the operator.
    pub accounts: Vec<(String, String)>,
}

/// A `nats-server` on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    options: NatsOptions,
    cluster: Option<ClusterNode>,
    broker: Broker,
}

/// A node's place in a [`NatsCluster`]: its name, route port and the routes to the others.
#[derive(Clone, Debug)]
struct ClusterNode {
    name: String,
    route_port: u16,
    routes: Vec<u16>,
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
        Self::launch(options, None)
    }

    fn launch(options: NatsOptions, cluster: Option<ClusterNode>) -> Result<Self, TestkitError> {
        let broker = Broker::launch(
            BINARY,
            "nats-server",
            "NATS_SERVER_BIN",
            &|binary, dir, port| spawn(binary, dir, port, &options, cluster.as_ref()),
        )?;
        Ok(NatsServer {
            options,
            cluster,
            broker,
        })
    }

    /// `nats://127.0.0.1:<port>` (`tls://` with [`NatsOptions::tls`]; without credentials).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.broker.port)
    }

    broker_controls!();

    /// Starts the server again on the same port (killing it first if it runs).
    ///
    /// # Errors
    /// A start failure.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        let (options, cluster) = (&self.options, self.cluster.as_ref());
        self.broker
            .restart(&|binary, dir, port| spawn(binary, dir, port, options, cluster))
    }
}

fn spawn(
    binary: &Path,
    dir: &tempfile::TempDir,
    port: u16,
    options: &NatsOptions,
    cluster: Option<&ClusterNode>,
) -> Result<Proc, TestkitError> {
    let io = |source| TestkitError::Io {
        binary: BINARY,
        source,
    };
    let mut config = format!("listen: \"127.0.0.1:{port}\"\n");
    if let Some(max) = options.max_payload {
        config.push_str(&format!("max_payload: {max}\n"));
    }
    let mut users: Vec<String> = options
        .nkeys
        .iter()
        .map(|key| format!("{{ nkey: \"{key}\" }}"))
        .collect();
    if let Some((user, pass)) = &options.credentials {
        users.push(format!("{{ user: \"{user}\", password: \"{pass}\" }}"));
    }
    if let Some(trust) = &options.trust {
        let operator = dir.path().join("operator.jwt");
        std::fs::write(&operator, &trust.operator_jwt).map_err(io)?;
        let preload: Vec<String> = trust
            .accounts
            .iter()
            .map(|(key, jwt)| format!("  {key}: \"{jwt}\""))
            .collect();
        config.push_str(&format!(
            "operator: {operator:?}\nresolver: MEMORY\nresolver_preload: {{\n{}\n}}\n",
            preload.join("\n")
        ));
    } else if !users.is_empty() {
        config.push_str(&format!(
            "authorization {{\n  users: [\n    {}\n  ]\n}}\n",
            users.join("\n    ")
        ));
    } else if let Some(token) = &options.token {
        config.push_str(&format!("authorization {{\n  token: \"{token}\"\n}}\n"));
    }
    if let Some((cert, key)) = &options.tls {
        config.push_str(&format!(
            "tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n"
        ));
        if let Some(ca) = &options.tls_client_ca {
            config.push_str(&format!("  ca_file: {ca:?}\n  verify: true\n"));
        }
        config.push_str("}\n");
    }
    if let Some(node) = cluster {
        let routes: Vec<String> = node
            .routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        config.push_str(&format!(
            "server_name: {}\ncluster {{\n  name: psrpc\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
            node.name,
            node.route_port,
            routes.join(", ")
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

/// A cluster of `nats-server`s on loopback (client and route ports free ports), all routed to
/// each other; each node is killed on drop. Clients connected to one node learn the others
/// from the server (`connect_urls`) and move there when their node goes.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes with `options` (each with its own JetStream store when
    /// [`NatsOptions::jetstream`] is set) and waits until every node is routed to every other.
    ///
    /// # Errors
    /// As [`NatsServer::start`], or [`TestkitError::NotReady`] when the routes do not form.
    pub fn start(size: usize, options: NatsOptions) -> Result<Self, TestkitError> {
        // The route ports are picked before any node binds them, so another process can take
        // one in between; that shows as a node failing to bind, and a new set of ports is tried.
        let mut attempt = 1;
        loop {
            match Self::start_once(size, options.clone()) {
                Err(TestkitError::NotReady { detail, .. })
                    if attempt < 5 && detail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    fn start_once(size: usize, options: NatsOptions) -> Result<Self, TestkitError> {
        let io = |source| TestkitError::Io {
            binary: BINARY,
            source,
        };
        let route_ports = (0..size)
            .map(|_| crate::process::free_port().map_err(io))
            .collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(size);
        for (i, &route_port) in route_ports.iter().enumerate() {
            let node = ClusterNode {
                name: format!("n{i}"),
                route_port,
                routes: route_ports
                    .iter()
                    .copied()
                    .filter(|&p| p != route_port)
                    .collect(),
            };
            nodes.push(NatsServer::launch(options.clone(), Some(node))?);
        }
        let cluster = NatsCluster { nodes };
        let ports: Vec<u16> = cluster.nodes.iter().map(NatsServer::port).collect();
        let start = std::time::Instant::now();
        // A lone node advertises no peers: it is ready once it greets (checked at start).
        while ports.len() > 1 && !ports.iter().all(|&p| knows_all(p, &ports)) {
            if start.elapsed() > crate::process::READY_TIMEOUT {
                return Err(TestkitError::NotReady {
                    binary: BINARY,
                    seconds: start.elapsed().as_secs(),
                    detail: "the cluster routes did not form".into(),
                });
            }
            // Polling interval of a readiness probe, not a synchronisation sleep.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(cluster)
    }

    /// The client URLs of all nodes, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i`.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The greeting of the node on `port`, if it answers.
fn greeting(port: u16) -> Option<String> {
    use std::io::BufRead;
    let addr = ([127, 0, 0, 1], port).into();
    let stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

/// True when the node on `port` advertises every port of `ports` to clients (its routes to
/// all other nodes are up).
fn knows_all(port: u16, ports: &[u16]) -> bool {
    greeting(port).is_some_and(|info| {
        ports
            .iter()
            .all(|p| info.contains(&format!("\"127.0.0.1:{p}\"")))
    })
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
