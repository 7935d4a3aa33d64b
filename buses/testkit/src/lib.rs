//! Throwaway brokers for tests: each [`NatsServer`] and [`RedisServer`] is a real
//! `nats-server` / `redis-server` process on a free loopback port, stopped on drop.
//!
//! Tests run in parallel, each with brokers of its own; fault tests can [`kill`] a broker and
//! [`restart`] it on the same port.
//!
//! ```no_run
//! let nats = psrpc_testkit::NatsServer::start().unwrap();
//! let redis = psrpc_testkit::RedisServer::start().unwrap();
//! println!("{} {}", nats.url(), redis.url());
//! ```
//!
//! [`kill`]: NatsServer::kill
//! [`restart`]: NatsServer::restart

/// The process controls of a broker type with a `broker: process::Broker` field.
macro_rules! broker_controls {
    () => {
        /// The port.
        pub fn port(&self) -> u16 {
            self.broker.port
        }

        /// The process ID, while running.
        pub fn pid(&self) -> Option<u32> {
            self.broker.proc.pid()
        }

        /// True while the process runs.
        pub fn is_running(&mut self) -> bool {
            self.broker.proc.is_running()
        }

        /// Kills the server with SIGKILL (no goodbye to clients).
        pub fn kill(&mut self) {
            self.broker.proc.kill();
        }

        /// Stops the server with SIGTERM.
        pub fn stop(&mut self) {
            self.broker.proc.stop();
        }
    };
}

mod certs;
mod mosquitto;
mod nats;
mod operator;
mod process;
mod rabbitmq;
mod redis;
mod redis_cluster;

pub use certs::TestCerts;
pub use mosquitto::{MosquittoOptions, MosquittoServer};
pub use nats::{NatsCluster, NatsOptions, NatsServer, NatsTrust};
pub use operator::TestOperator;
pub use rabbitmq::{
    RABBITMQ_PASSWORD, RABBITMQ_USER, RabbitMqOptions, RabbitMqServer, RabbitMqTls,
};
pub use redis::{RedisOptions, RedisServer, RedisTls};
pub use redis_cluster::{REDIS_CLUSTER_NODE_TIMEOUT_MS, RedisCluster};

/// What can go wrong starting a broker.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The broker binary is not installed.
    #[error(
        "`{binary}` was not found on PATH; install it with `apt-get install -y {package}` \
         (or set {env} to its path)"
    )]
    MissingBinary {
        /// The binary name.
        binary: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// The environment variable that overrides its path.
        env: &'static str,
    },
    /// The process could not be spawned or its files written.
    #[error("failed to run {binary}: {source}")]
    Io {
        /// The binary name.
        binary: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The broker did not become ready in time.
    #[error("{binary} did not become ready within {seconds} s: {detail}")]
    NotReady {
        /// The binary name.
        binary: &'static str,
        /// How long we waited.
        seconds: u64,
        /// What was seen (exit status, last log lines).
        detail: String,
    },
    /// Test certificates could not be made.
    #[error("cannot make test certificates: {0}")]
    Certificate(String),
}
