//! Runs the `word-count` example: in one process (coordinator and in-process workers), and as
//! separate worker and coordinator processes on JetStream and Redis (brokers started for the
//! test), checking that every chunk was counted.

use std::process::{Child, Command, Stdio};

mod common;

use psrpc_testkit::{NatsOptions, NatsServer, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_word-count");

fn run_ok(args: &[&str]) -> String {
    common::run_ok(BIN, args)
}

fn check(out: &str, chunks: u32) {
    let words = chunks * 50;
    for expected in [
        "batch ".to_owned(),
        format!("{chunks} done, 0 failed of {chunks}"),
        format!("words counted: {words} of {words}"),
        "done".to_owned(),
    ] {
        assert!(out.contains(&expected), "no {expected:?} in:\n{out}");
    }
}

/// Worker processes, killed on drop (they run until Ctrl-C).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn separate_processes(url: &str) {
    let _workers = Workers(
        (0..2)
            .map(|_| {
                Command::new(BIN)
                    .args(["--role", "worker", "--bus", url])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn worker")
            })
            .collect(),
    );
    let out = run_ok(&[
        "--role",
        "coordinator",
        "--bus",
        url,
        "--chunks",
        "300",
        "--no-progress",
    ]);
    check(&out, 300);
    assert!(out.contains("worker-"), "{out}");
}

#[test]
fn word_count_in_process() {
    check(&run_ok(&["--chunks", "500", "--no-progress"]), 500);
}

#[test]
fn word_count_on_jetstream() {
    let nats = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    separate_processes(&nats.url());
}

#[test]
fn word_count_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    separate_processes(&redis.url());
}
