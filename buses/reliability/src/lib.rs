//! Reliability tests of psrpc against real brokers; this crate has no code of its own.
//!
//! The tests in `tests/` start their own `nats-server` and `redis-server` processes (through
//! `psrpc-testkit`) and check, on both buses, what happens under faults, load and bad input:
//!
//! - `restart`: the broker is killed (SIGKILL) and restarted on the same port under load;
//! - `server_death`: a server vanishes mid-call (its process, here its runtime, dies);
//! - `cancellation`: a caller that drops a call cancels the handler;
//! - `backpressure`: the in-flight limit and slow subscribers;
//! - `malformed`: garbage on every channel kind;
//! - `security`: credentials, and hostile topics that try to address other channels;
//! - `no_server`: how fast a call to a method nobody serves fails.
//!
//! Tests that measure print a one-line JSON summary; run them with
//! `cargo test -p psrpc-reliability -- --nocapture` and see `RELIABILITY.md`.
