//! [`RedisBusOptions`]: limits, timeouts and batching of a bus.

use std::time::Duration;

/// The largest value Redis accepts (`proto-max-bulk-len` default): 512 MiB.
pub const REDIS_MAX_PAYLOAD: usize = 512 << 20;

/// Options of a [`RedisBus`](crate::RedisBus).
///
/// ```
/// use std::time::Duration;
/// let options = psrpc_redis::RedisBusOptions::default()
///     .max_payload(8 << 20)
///     .response_timeout(Some(Duration::from_secs(10)));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisBusOptions {
    /// The largest payload accepted, in bytes (default 64 MiB, capped at
    /// [`REDIS_MAX_PAYLOAD`]). Larger publishes fail with [`BusError::PayloadTooLarge`](psrpc::bus::BusError::PayloadTooLarge).
    pub max_payload: usize,
    /// How long one Redis command (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, lock SET, PING) may take,
    /// including waiting for a reconnect in progress; `None` waits forever.
    ///
    /// Default 3 s, replacing the redis crate's 500 ms: go-redis (the Go peers) uses 3 s, it is
    /// psrpc's default call timeout, so a publish never gives up before the call it serves, and
    /// it leaves room to write a large payload. A timed-out command may still have reached the
    /// server: [`BusError::Timeout`](psrpc::bus::BusError::Timeout) means "unknown", not "not sent".
    pub response_timeout: Option<Duration>,
    /// How long one connection attempt may take (default 3 s); `None` waits forever.
    pub connection_timeout: Option<Duration>,
    /// Longest pause between reconnection attempts (default 1 s), so a restarted server is
    /// found again quickly.
    pub max_reconnect_delay: Duration,
    /// Interval of the `PING` on the push connection that detects a dead connection while
    /// idle and restarts reconnecting after the connection manager gave up (default 1 s);
    /// `None` disables it.
    pub health_check_interval: Option<Duration>,
    /// Lock `SET`s for queue channels on the way at once (default 1024; they are pipelined
    /// with the publishes, so many on the way cost little).
    pub max_concurrent_locks: usize,
    /// Queue messages waiting for a lock `SET` slot (default 4096); past it they are dropped
    /// and counted.
    pub max_pending_locks: usize,
    /// Publishes waiting to be written (default 4096). A publish waits for room when the queue
    /// is full, so this bounds the memory a burst of publishes holds. Lock `SET`s wait in a
    /// queue of their own ([`max_pending_locks`](Self::max_pending_locks)).
    pub publish_queue: usize,
    /// The most commands sent in one pipeline (default 512).
    pub max_batch: usize,
    /// On a Redis Cluster ([`RedisBus::connect_cluster`](crate::RedisBus::connect_cluster)),
    /// carry channels with sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7) instead of
    /// classic `SUBSCRIBE`/`PUBLISH`. Default off; ignored on a single server.
    ///
    /// Classic cluster pub/sub broadcasts every message to every node of the cluster, so its
    /// cost grows with the node count. A sharded channel lives on the shard owning its name's
    /// hash slot: a message goes to that shard's master and replicas only, so adding shards
    /// adds pub/sub capacity, and the `SPUBLISH` count covers every subscriber of the channel,
    /// so calls to a method nobody serves fail at once again (see
    /// [`Bus::publish_watched`](psrpc::bus::Bus::publish_watched)).
    ///
    /// Off by default because Go psrpc (go-redis) uses classic `PUBLISH`/`SUBSCRIBE`: sharded
    /// and classic channels are separate namespaces in Redis, so a bus with this option never
    /// meets a Go peer, nor a Rust bus without it. Turn it on for a whole deployment at once.
    /// See docs/scaling.md.
    pub sharded_pubsub: bool,
}

impl RedisBusOptions {
    /// Sets [`max_payload`](Self::max_payload).
    pub fn max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, response_timeout: Option<Duration>) -> Self {
        self.response_timeout = response_timeout;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    pub fn connection_timeout(mut self, connection_timeout: Option<Duration>) -> Self {
        self.connection_timeout = connection_timeout;
        self
    }

    /// Sets [`max_reconnect_delay`](Self::max_reconnect_delay).
    pub fn max_reconnect_delay(mut self, max_reconnect_delay: Duration) -> Self {
        self.max_reconnect_delay = max_reconnect_delay;
        self
    }

    /// Sets [`health_check_interval`](Self::health_check_interval).
    pub fn health_check_interval(mut self, health_check_interval: Option<Duration>) -> Self {
        self.health_check_interval = health_check_interval;
        self
    }

    /// Sets [`max_concurrent_locks`](Self::max_concurrent_locks).
    pub fn max_concurrent_locks(mut self, max_concurrent_locks: usize) -> Self {
        self.max_concurrent_locks = max_concurrent_locks;
        self
    }

    /// Sets [`max_pending_locks`](Self::max_pending_locks).
    pub fn max_pending_locks(mut self, max_pending_locks: usize) -> Self {
        self.max_pending_locks = max_pending_locks;
        self
    }

    /// Sets [`publish_queue`](Self::publish_queue).
    pub fn publish_queue(mut self, publish_queue: usize) -> Self {
        self.publish_queue = publish_queue;
        self
    }

    /// Sets [`max_batch`](Self::max_batch).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Sets [`sharded_pubsub`](Self::sharded_pubsub).
    pub fn sharded_pubsub(mut self, sharded_pubsub: bool) -> Self {
        self.sharded_pubsub = sharded_pubsub;
        self
    }
}

impl Default for RedisBusOptions {
    fn default() -> Self {
        RedisBusOptions {
            max_payload: 64 << 20,
            response_timeout: Some(Duration::from_secs(3)),
            connection_timeout: Some(Duration::from_secs(3)),
            max_reconnect_delay: Duration::from_secs(1),
            health_check_interval: Some(Duration::from_secs(1)),
            max_concurrent_locks: 1024,
            max_pending_locks: 4096,
            publish_queue: 4096,
            max_batch: 512,
            sharded_pubsub: false,
        }
    }
}
