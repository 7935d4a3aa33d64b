//! The Redis bus for psrpc, wire-compatible with Go psrpc v0.7 on Redis.
//!
//! [`RedisBus`] implements [`psrpc::Bus`]. Channels are Redis pub/sub channels named with
//! [`Channel::pipe_name`](psrpc::Channel::pipe_name) (`Svc|Method|topic|REQ`, docs/wire.md §4.1); payloads are the envelope bytes
//! as given, published with `PUBLISH`.
//!
//! # Design
//!
//! - **One push connection per bus for receiving.** Every subscription of a bus shares one RESP3
//!   connection (a [`redis::aio::ConnectionManager`] with a push sender and automatic
//!   resubscription). The push sender demultiplexes each message by channel name straight
//!   into the bounded buffers of the local subscriptions, inside the connection's own task
//!   (no unbounded queue, no hand-off to another task per message). Delivery never waits: a
//!   full buffer drops the message and counts it (see [`psrpc::bus::SubscriptionSink::deliver`]),
//!   so one slow subscriber never stalls the others.
//! - **One Redis SUBSCRIBE per channel name**, shared by all local subscribers of that name;
//!   `UNSUBSCRIBE` is sent when the last one goes. [`Bus::subscribe`](psrpc::Bus::subscribe) returns once the server
//!   has confirmed the SUBSCRIBE, so a message published after it returns is delivered.
//! - **A separate connection for commands**: `PUBLISH` and the queue lock `SET`s, written by
//!   one writer task that sends whatever has queued up as one pipeline (bounded queue,
//!   [`RedisBusOptions::publish_queue`]); each caller still gets its own reply or error.
//!   [`Bus::flush`](psrpc::Bus::flush) waits until everything queued before has been answered by Redis.
//! - **Reconnects** are handled by the connection manager: after the server comes back the
//!   push connection resubscribes every channel by itself (messages published meanwhile are
//!   lost, as with any Redis pub/sub). A periodic `PING` on the push connection
//!   ([`RedisBusOptions::health_check_interval`]) notices dead connections even when the bus
//!   is idle and retries when an earlier reconnect gave up.
//!
//! # Queue channels (Go's lock rule, docs/wire.md §7)
//!
//! Redis has no queue groups, so a channel with [`Channel::is_queue`](psrpc::Channel::is_queue) works as in Go psrpc:
//! every queue subscriber (in every process) receives every message; on receipt each bus runs
//! `SET <key> <random> EX 5 NX` with key = standard base64 (with padding) of the SHA-256 of the
//! whole payload ([`queue_lock_key`]), and only the bus that set the key delivers the message,
//! to one of its local queue subscribers (round robin). Rust and Go members of the same queue
//! therefore share the work.
//!
//! **Consequence: identical payloads published to queue channels within 5 seconds are delivered
//! only once** (the second finds the key set). RPC requests never repeat (each carries a fresh
//! request ID and timestamps); queue *subscriptions* publishing the same message twice in quick
//! succession see the second one swallowed, exactly as Go peers do.
//!
//! The lock `SET`s go out in the command writer's pipelines, beside the publishes, at most
//! [`RedisBusOptions::max_concurrent_locks`] on the way at once; the writer hands a message
//! whose lock it won to the queue subscriber as the reply arrives. Messages waiting for a lock
//! queue up to [`RedisBusOptions::max_pending_locks`], past which they are dropped and counted
//! on the queue subscriber whose turn it was.
//!
//! # Redis Cluster
//!
//! [`RedisBus::connect_cluster`] takes seed nodes of a Redis Cluster and runs both connections
//! as the redis crate's cluster connections: lock keys go to their shard, `MOVED` and failovers
//! are followed, and subscriptions move to the promoted replica after a failover. Pub/sub is
//! classic (`PUBLISH`/`SUBSCRIBE`, broadcast to every node by the cluster), so Go peers on any
//! node interoperate; every message reaches every node (docs/scaling.md). On a cluster,
//! `PUBLISH` counts only one node's subscribers, so calls nobody serves end at their deadline
//! rather than failing fast. [`RedisBusOptions::sharded_pubsub`] carries channels with sharded
//! pub/sub instead (`SSUBSCRIBE`/`SPUBLISH`, which Go psrpc does not speak), opt-in for a whole
//! deployment. Not supported: Sentinel.
//!
//! ```no_run
//! use psrpc::{Client, MethodInfo, Server};
//! use psrpc_redis::RedisBus;
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = RedisBus::connect("redis://127.0.0.1:6379/").await?;
//! let server = Server::new("Greeter", bus.clone());
//! server
//!     .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(format!("hi {req}")) })
//!     .await?;
//! let client = Client::new("Greeter", bus).await?;
//! let reply: String = client.request(ECHO, &[], &"bob".to_string(), Default::default()).await?;
//! assert_eq!(reply, "hi bob");
//! # Ok(())
//! # }
//! ```

mod bus;
mod conn;
pub mod durable;
mod error;
mod lock;
mod op;
mod options;
mod push;
mod router;
mod stats;
mod writer;

pub use bus::RedisBus;
pub use error::RedisBusError;
pub use lock::{QUEUE_LOCK_TTL_SECS, queue_lock_key};
pub use options::{REDIS_MAX_PAYLOAD, RedisBusOptions};
pub use stats::RedisBusStats;
