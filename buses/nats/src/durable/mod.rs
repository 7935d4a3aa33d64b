//! Durable calls on NATS JetStream: [`JetStreamCarrier`], a [`psrpc::durable::Carrier`].
//!
//! Per queue (normally a service) it keeps, all with file storage:
//!
//! - a **work-queue stream** `PSRPC_DQ_<queue>` (subject `psrpc.dq.<queue>`) holding the tasks,
//!   with a duplicate window for idempotency keys (`Nats-Msg-Id` is the task ID derived from the
//!   key); a publish ack means the task is persisted;
//! - a **durable pull consumer** `workers` shared by every worker: `AckWait` is the visibility
//!   timeout, heartbeats are `InProgress` acks (`+WPI`), retries are `Nak` with the backoff
//!   delay, hand-backs are `Nak` without delay, dead-lettered tasks are `Term`inated;
//!   `MaxDeliver` is unlimited because the worker itself dead-letters a task delivered more
//!   often than its attempt limit (JetStream would otherwise strand it silently);
//! - a **key-value bucket** `PSRPC_DR_<queue>` with the results and the effect records
//!   (`fx.<name>.<task>`, written with KV create), its `max_age` the queue's result TTL
//!   (per-bucket: the nats-server versions supported have no per-key TTL);
//! - a **dead-letter stream** `PSRPC_DLQ_<queue>` (subject `psrpc.dlq.<queue>`); a dead
//!   letter's ID is its stream sequence.
//!
//! Workers read the consumer through one continuous pull per queue and carrier (as JetStream's
//! own consumers run), which asks for as many tasks as the worker had free handler slots at its
//! first fetch. Tasks the server pushed ahead of a free slot wait in the client, without
//! heartbeats, until the worker takes them, for at most the time its slots stay busy. When
//! handlers run longer than the visibility timeout, such a waiting task can expire, be
//! redelivered to another worker and also run here: at-least-once allows it, and side effects
//! guarded with `TaskContext::record_effect` still apply once. A worker's shutdown hands the
//! waiting tasks back at once.
//!
//! A finished task is announced on the core subject `psrpc.dqdone.<queue>.<task ID>` with its
//! result as the payload, so waiters learn of results without polling or a second read; a
//! carrier listens with one wildcard subscription per queue (`psrpc.dqdone.<queue>.*`),
//! made by the queue's first waiter, so every waiting process of a queue receives all of its
//! results.
//! Queue names are sanitised to `[A-Za-z0-9_-]` for stream and bucket names.

mod carrier;
mod dead_letters;
mod notify;
mod results;
mod stats;
mod tasks;

pub use carrier::{JetStreamCarrier, JetStreamOptions};
