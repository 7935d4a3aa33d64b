//! Every example split in two processes over one broker (NATS and Redis) started for the test: a
//! `--role server` process serves until it is sent SIGTERM, a `--role client` process calls it
//! and exits. Also `--help` and the refusal of a split role without a broker.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{LIMIT, run};
use psrpc_testkit::{NatsServer, RedisServer};

mod common;

/// A `--role server` process and the lines it printed so far.
struct Serving {
    child: Child,
    lines: mpsc::Receiver<String>,
    out: Vec<String>,
}

impl Serving {
    /// Starts `binary --bus url --role server` and waits for its `serving:` line.
    fn start(binary: &str, url: &str) -> Serving {
        let mut child = Command::new(binary)
            .args(["--bus", url, "--role", "server"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {binary}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serving = Serving {
            child,
            lines,
            out: Vec::new(),
        };
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match serving.lines.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.starts_with("serving: ");
                    serving.out.push(line);
                    if ready {
                        return serving;
                    }
                }
                Err(_) => {
                    let _ = serving.child.kill();
                    panic!(
                        "{binary} --role server never printed `serving:`; it printed:\n{}",
                        serving.out.join("\n")
                    );
                }
            }
        }
    }

    /// Stops the server with SIGTERM, as a terminal's user would with Ctrl-C (SIGINT), and
    /// returns everything it printed once it exited successfully.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        // The reader thread ends at end of output, which comes when the process exits.
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("server did not stop on SIGTERM:\n{}", self.out.join("\n"));
                }
            }
        }
        let status = self.child.wait().expect("wait for the server");
        let out = self.out.join("\n");
        assert!(status.success(), "server exited with {status}:\n{out}");
        out
    }
}

/// Asserts that `lines` appear in `out` in this order, each as part of some line.
fn assert_lines_in_order(name: &str, out: &str, lines: &[&str]) {
    let mut rest = out.lines();
    for expected in lines {
        assert!(
            rest.any(|line| line.contains(expected)),
            "{name}: no line containing {expected:?} (in order) in:\n{out}"
        );
    }
}

/// Serves `binary` in one process, runs its client in another; checks the client's output
/// against `client_lines` and the server's (once stopped) against `server_lines`.
fn split(binary: &str, url: &str, client_lines: &[&str], server_lines: &[&str]) {
    let server = Serving::start(binary, url);
    let output = run(binary, &["--bus", url, "--role", "client"]);
    let client_out = String::from_utf8_lossy(&output.stdout).into_owned();
    let server_out = server.stop();
    assert!(
        output.status.success(),
        "{binary} --role client failed with {}\nstdout:\n{client_out}\nstderr:\n{}\nserver:\n{server_out}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_lines_in_order(binary, &client_out, client_lines);
    assert_lines_in_order(binary, &server_out, server_lines);
}

#[test]
fn every_example_runs_as_a_server_and_a_client_process() {
    let nats = NatsServer::start().expect("nats-server");
    every_example_split(&nats.url());
}

#[test]
fn every_example_runs_as_a_server_and_a_client_process_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    every_example_split(&redis.url());
}

fn every_example_split(url: &str) {
    split(
        env!("CARGO_BIN_EXE_demo"),
        url,
        &[
            "bus: ",
            "queue call:    hello (from node-",
            "affinity call: render placed on node-b, the least loaded server",
            "multi call:    3 servers answered",
            "node-a failed: unavailable: too busy to report",
            "topic call:    ping served in us-east by node-b",
            "subscription:  psrpc speaks Go's wire format",
            "stream:        hello -> HELLO",
            "done",
        ],
        &["serving: node-a, node-b and node-c", "stopping", "done"],
    );
    split(
        env!("CARGO_BIN_EXE_fleet-stats"),
        url,
        &[
            "media-1: cpu 42.5%",
            "media-3: error: unavailable: metrics agent not running",
            "fleet total: 3 servers (1 failed), 36 rooms, 383 participants, avg cpu 41.0%",
            "done",
        ],
        &["serving: media-1 to media-4", "stopping", "done"],
    );
    split(
        env!("CARGO_BIN_EXE_regions"),
        url,
        &[
            "lookup lobby in eu-west: answered by eu-",
            "lookup lobby in us-east: answered by us-1 (us-east)",
            "lookup lobby in ap-south: error:",
            "census of eu-west: eu-1 (3 rooms), eu-2 (5 rooms)",
            "done",
        ],
        &["eu-1 serves eu-west", "serving: eu-1, eu-2 and us-1"],
    );
    split(
        env!("CARGO_BIN_EXE_affinity"),
        url,
        &[
            "claims: node-a 0.20, node-b 0.70, node-c 0.40",
            "transcode (cpu 0.10) -> node-b (load now 0.30)",
            "big-render (cpu 0.10) -> error:",
            "huge (cpu 0.90) -> error:",
            "done",
        ],
        &["node-d load 0.95", "serving: node-a to node-d"],
    );
    split(
        env!("CARGO_BIN_EXE_middleware"),
        url,
        &[
            "greeting:      hello, dear ada (after a retried lookup)",
            "-> one trace across two hops",
            "no user:       unauthenticated: say who you are",
            "panic:         internal: internal error: handler panicked",
            "shed with resource_exhausted",
            "observed calls:",
            "client Greeter.Greet ok",
        ],
        // The services' observer prints each call as the server process sees it.
        &[
            "serving: Greeter and Profiles",
            "observed: server Profiles.Get unavailable",
            "observed: server Profiles.Get ok",
            "observed: server Greeter.Greet ok",
            "observed: server Greeter.Greet unauthenticated",
            "observed: server Profiles.Get internal",
            "stopping",
        ],
    );
}

#[test]
fn help_prints_usage_instead_of_running() {
    for binary in [
        env!("CARGO_BIN_EXE_demo"),
        env!("CARGO_BIN_EXE_durable-jobs"),
        env!("CARGO_BIN_EXE_fleet-stats"),
        env!("CARGO_BIN_EXE_regions"),
        env!("CARGO_BIN_EXE_affinity"),
        env!("CARGO_BIN_EXE_middleware"),
        env!("CARGO_BIN_EXE_word-count"),
    ] {
        let output = run(binary, &["--help"]);
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{binary} --help: {}",
            output.status
        );
        assert!(out.contains("Usage: "), "{out}");
        assert!(out.contains("--role ROLE"), "{out}");
        assert!(
            !out.contains("bus: ") && !out.contains("carrier: "),
            "--help ran the example:\n{out}"
        );
    }
}

#[test]
fn a_split_role_needs_a_broker() {
    for binary in [env!("CARGO_BIN_EXE_demo"), env!("CARGO_BIN_EXE_word-count")] {
        let output = run(binary, &["--role", "server"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("need --bus URL"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

/// The durable examples over Redis Streams: a worker process and a caller process.
#[test]
fn durable_examples_run_as_a_server_and_a_client_process() {
    let redis = RedisServer::start().expect("redis-server");
    let url = redis.url();
    split(
        env!("CARGO_BIN_EXE_durable-jobs"),
        &url,
        &["enqueued intro.mp4 as task", "result: "],
        &["serving: worker-b", "stopping"],
    );
    split(
        env!("CARGO_BIN_EXE_word-count"),
        &url,
        &["batch ", "2000 done, 0 failed of 2000", "done"],
        &["serving: worker-", "stopping", "chunks counted"],
    );
}
