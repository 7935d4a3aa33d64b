//! A throwaway Redis Cluster: `redis-server` nodes in cluster mode, joined with `redis-cli`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{READY_TIMEOUT, find_binary};
use crate::{RedisOptions, RedisServer, TestkitError};

const CLI: &str = "redis-cli";

/// Cluster node timeout: short, so a killed master is failed over within seconds.
pub const REDIS_CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

/// A Redis Cluster on loopback: `masters` masters (at least 3, as `redis-cli --cluster create`
/// requires) sharing the 16384 slots, each with `replicas_per_master` replicas. Nodes are
/// killed on drop; each can be killed and restarted on its own.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    cli: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts the nodes, forms the cluster and waits until every node reports
    /// `cluster_state:ok` and knows every other node.
    ///
    /// # Errors
    /// [`TestkitError::MissingBinary`] without `redis-server` or `redis-cli` (package
    /// `redis-tools`, a dependency of `redis-server`), or [`TestkitError::NotReady`] when the
    /// cluster does not form.
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<Self, TestkitError> {
        let cli = find_binary(CLI, "redis-tools", "REDIS_CLI_BIN")?;
        let total = masters * (1 + replicas_per_master);
        let nodes = (0..total)
            .map(|_| {
                RedisServer::launch(RedisOptions::default(), Some(REDIS_CLUSTER_NODE_TIMEOUT_MS))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes, cli };
        // `--cluster create` takes the first `masters` addresses as masters and the rest as
        // replicas of them.
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port())),
        );
        args.extend([
            "--cluster-replicas".to_owned(),
            replicas_per_master.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        let out = cluster.run(&args)?;
        if !out.status.success() {
            return Err(not_ready(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        for i in 0..total {
            cluster.wait_ok(i, total)?;
        }
        Ok(cluster)
    }

    /// The nodes, masters first as created (roles change after a failover).
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis://127.0.0.1:<port>/` of every node: the seed URLs for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs `redis-cli -p <port of node i> <args>` and returns its output (e.g. `ROLE`,
    /// `CLUSTER NODES`).
    ///
    /// # Errors
    /// [`TestkitError::Io`] when redis-cli cannot run.
    pub fn command(&self, node: usize, args: &[&str]) -> Result<String, TestkitError> {
        let mut all = vec!["-p".to_owned(), self.nodes[node].port().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let out = self.run(&all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Indexes of the nodes that replicate node `master` now (from its `CLUSTER NODES`).
    ///
    /// # Errors
    /// As [`command`](Self::command).
    pub fn replicas_of(&self, master: usize) -> Result<Vec<usize>, TestkitError> {
        let nodes = self.command(master, &["CLUSTER", "NODES"])?;
        let id = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        Ok(nodes
            .lines()
            .filter(|l| l.split(' ').nth(3) == Some(id.as_str()))
            .filter_map(|l| {
                let port = l.split(' ').nth(1)?.split(['@', ':']).nth(1)?;
                self.nodes.iter().position(|n| n.port().to_string() == port)
            })
            .collect())
    }

    /// Waits until node `node` says `cluster_state:ok` and knows `known` nodes, and, for a
    /// replica, has synced with its master.
    ///
    /// # Errors
    /// [`TestkitError::NotReady`] after the readiness timeout.
    pub fn wait_ok(&self, node: usize, known: usize) -> Result<(), TestkitError> {
        let start = Instant::now();
        let want = format!("cluster_known_nodes:{known}");
        loop {
            let info = self.command(node, &["CLUSTER", "INFO"])?;
            // A replica must have synced too, or it could not take over from its master.
            let role = self.command(node, &["ROLE"])?;
            let synced = role.starts_with("master") || role.lines().nth(3) == Some("connected");
            if info.contains("cluster_state:ok") && info.contains(&want) && synced {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(not_ready(format!("node {node}: {info}")));
            }
            // Polling interval of a readiness probe, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, args: &[String]) -> Result<std::process::Output, TestkitError> {
        Command::new(&self.cli)
            .args(args)
            .output()
            .map_err(|source| TestkitError::Io {
                binary: CLI,
                source,
            })
    }
}

fn not_ready(detail: String) -> TestkitError {
    TestkitError::NotReady {
        binary: CLI,
        seconds: READY_TIMEOUT.as_secs(),
        detail,
    }
}
