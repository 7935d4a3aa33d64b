//! Runs the `durable-jobs` example on the in-process carrier, on JetStream and on Redis
//! Streams (brokers started for the test), checking that the crashed worker's job completes.

mod common;

use psrpc_testkit::{NatsOptions, NatsServer, RedisServer};

fn run_ok(args: &[&str]) -> String {
    common::run_ok(env!("CARGO_BIN_EXE_durable-jobs"), args)
}

fn check(out: &str) {
    let expected = [
        "enqueued intro.mp4 as task TSK_",
        "worker-a: rendering intro.mp4 (attempt 1)",
        "worker-a: crashed mid-task",
        "worker-b: rendering intro.mp4 (attempt 2)",
        "result: rendered intro.mp4 on attempt 2 by worker-b",
        "fetched later by task ID: rendered intro.mp4 on attempt 2 by worker-b",
    ];
    let mut lines = out.lines();
    for e in expected {
        assert!(
            lines.any(|l| l.contains(e)),
            "no line {e:?} (in order) in:\n{out}"
        );
    }
}

#[test]
fn durable_jobs_in_process() {
    check(&run_ok(&[]));
}

#[test]
fn durable_jobs_on_jetstream() {
    let nats = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    check(&run_ok(&["--bus", &nats.url()]));
}

#[test]
fn durable_jobs_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    check(&run_ok(&["--bus", &redis.url()]));
}
