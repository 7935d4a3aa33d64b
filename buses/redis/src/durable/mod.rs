//! Durable calls on Redis Streams: [`RedisStreamsCarrier`], a [`psrpc::durable::Carrier`].
//!
//! Per queue `q` (keys share the hash tag `{q}`):
//!
//! - `psrpc:dq:{q}`, a stream of tasks (fields `task` and `prior`, the attempts made before
//!   the entry was written) with the consumer group `workers`: `XADD` persists a task (with
//!   `appendfsync always`, the reply comes after the write reached the disk), `XREADGROUP`
//!   delivers it, `XACK` + `XDEL` remove it once processed;
//! - tasks idle in the pending list for longer than the visibility timeout are taken over with
//!   `XAUTOCLAIM`; a task's attempt number is `prior` plus its delivery count from the pending
//!   list (`XPENDING`); heartbeats re-claim the entry for its owner (`XCLAIM … JUSTID`), which
//!   resets its idle time;
//! - a retry moves the task to `psrpc:dq:{q}:delayed` (a sorted set by due time, bodies in the
//!   hash `psrpc:dq:{q}:held`) in one script; fetches move due tasks back into the stream;
//! - results are keys `psrpc:dr:{q}:<task ID>` with an expiry (`SET … PX`), announced on the
//!   channel `psrpc:dqdone:{q}` so waiters need not poll;
//! - idempotency keys are `psrpc:dqk:{q}:<task ID>` set with `SET NX PX` in the same script as
//!   the `XADD`;
//! - dead letters are the stream `psrpc:dlq:{q}`, their IDs the entry IDs.
//!
//! Every multi-step change (retry, hand-back, dead-lettering, the move of due tasks) is one Lua
//! script, so a crash of the worker or the server never leaves a task half-moved; each checks
//! that the worker still owns the entry, so a worker whose task was taken over after the
//! visibility timeout cannot retry or dead-letter it.

mod carrier;
mod notify;
mod scripts;

pub use carrier::{RedisStreamsCarrier, RedisStreamsOptions};
