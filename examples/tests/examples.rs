//! Runs every example binary on the in-process bus and on NATS, Redis and MQTT brokers started
//! for the test, checking the exit status and the lines that show each example did its job.

mod common;

use common::{run, run_ok};
use psrpc_testkit::{MosquittoServer, NatsServer, RedisServer};

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

fn check_demo(bus: &str, args: &[&str]) {
    let out = run_ok(env!("CARGO_BIN_EXE_demo"), args);
    assert_lines_in_order(
        "demo",
        &out,
        &[
            &format!("bus: {bus}"),
            "queue call:    hello (from node-",
            "affinity call: render placed on node-b, the least loaded server",
            "multi call:    3 servers answered",
            "node-a failed: unavailable: too busy to report",
            "node-b load=0.2",
            "node-c load=0.5",
            "topic call:    ping served in eu-west by node-",
            "topic call:    ping served in us-east by node-b",
            "subscription:  psrpc speaks Go's wire format",
            "stream:        hello -> HELLO",
            "stream:        stream -> STREAM",
            "done",
        ],
    );
}

fn check_fleet_stats(bus: &str, args: &[&str]) {
    let out = run_ok(env!("CARGO_BIN_EXE_fleet-stats"), args);
    assert_lines_in_order(
        "fleet-stats",
        &out,
        &[
            &format!("bus: {bus}"),
            "media-1: cpu 42.5%",
            "media-3: error: unavailable: metrics agent not running",
            "media-4: cpu 63.5%",
            "fleet total: 3 servers (1 failed), 36 rooms, 383 participants, avg cpu 41.0%",
            "media-4 shut down",
            "media-3: error: unavailable",
            "fleet total: 2 servers (1 failed), 16 rooms, 171 participants, avg cpu 29.8%",
            "done",
        ],
    );
    assert_eq!(out.matches("media-4: cpu").count(), 1, "{out}");
}

fn check_regions(bus: &str, args: &[&str]) {
    let out = run_ok(env!("CARGO_BIN_EXE_regions"), args);
    assert_lines_in_order(
        "regions",
        &out,
        &[
            &format!("bus: {bus}"),
            "lookup lobby in eu-west: answered by eu-",
            "lookup lobby in us-east: answered by us-1 (us-east)",
            "lookup lobby in ap-south: error:",
            "census of eu-west: eu-1 (3 rooms), eu-2 (5 rooms)",
            "eu-west subscriber got: [eu-west] maintenance at 02:00",
            "us-east subscriber got: [us-east] room standup opened",
            "us-1 registers ap-south at runtime",
            "ap-south subscriber got: [ap-south] now served by us-1",
            "lookup lobby in ap-south: answered by us-1 (ap-south)",
            "eu-1 and eu-2 deregister eu-west",
            "eu-west subscriber got: [eu-west] region closed",
            // The deregistered region no longer answers; the others still do.
            "lookup lobby in eu-west: error:",
            "census of eu-west: no servers",
            "lookup lobby in us-east: answered by us-1 (us-east)",
            "done",
        ],
    );
}

fn check_affinity(bus: &str, args: &[&str]) {
    let out = run_ok(env!("CARGO_BIN_EXE_affinity"), args);
    assert_lines_in_order(
        "affinity",
        &out,
        &[
            &format!("bus: {bus}"),
            // node-d has no room for the job and does not claim.
            "claims: node-a 0.20, node-b 0.70, node-c 0.40",
            // The least loaded server wins by default.
            "transcode (cpu 0.10) -> node-b (load now 0.30)",
            "big-render (cpu 0.10) -> error:",
            "thumbnail (cpu 0.10) -> node-a (load now 0.80)",
            "batch-1 (cpu 0.15) -> node-b (load now 0.45)",
            "batch-2 (cpu 0.15) -> node-b (load now 0.60)",
            "batch-3 (cpu 0.15) -> node-c (load now 0.65)",
            "huge (cpu 0.90) -> error:",
            "node-d final load 0.95",
            "done",
        ],
    );
}

fn check_middleware(bus: &str, args: &[&str]) {
    let out = run_ok(env!("CARGO_BIN_EXE_middleware"), args);
    assert_lines_in_order(
        "middleware",
        &out,
        &[
            &format!("bus: {bus}"),
            // The first lookup failed `unavailable` and the client's retry got through.
            "greeting:      hello, dear ada (after a retried lookup)",
            "-> one trace across two hops",
            "no user:       unauthenticated: say who you are",
            "panic:         internal: internal error: handler panicked",
            "shed with resource_exhausted",
            "observed calls:",
            "server Profiles.Get unavailable",
            "server Profiles.Get ok",
            "client Greeter.Greet ok",
            "server Greeter.Greet unauthenticated",
            "server Profiles.Get internal",
            "server Profiles.Get resource_exhausted",
        ],
    );
}

/// Every example against the bus of `args`, which the output names `bus`.
fn check_all(bus: &str, args: &[&str]) {
    check_demo(bus, args);
    check_fleet_stats(bus, args);
    check_regions(bus, args);
    check_affinity(bus, args);
    check_middleware(bus, args);
}

#[test]
fn examples_on_the_in_process_bus() {
    check_all("local", &[]);
}

#[test]
fn examples_on_nats() {
    let nats = NatsServer::start().expect("nats-server");
    check_all("nats", &["--bus", &nats.url()]);
}

#[test]
fn examples_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    // The `--bus=URL` spelling works too.
    check_all("redis", &[&format!("--bus={}", redis.url())]);
}

#[test]
fn demo_on_rabbitmq() {
    let rabbit = psrpc_testkit::RabbitMqServer::shared().expect("rabbitmq-server");
    let url = rabbit.fresh_url().expect("a virtual host");
    check_demo("amqp", &["--bus", &url]);
}

#[test]
fn examples_on_mqtt() {
    let mqtt = MosquittoServer::start().expect("mosquitto");
    check_all("mqtt", &["--bus", &mqtt.url()]);
}

#[test]
fn an_unknown_scheme_is_a_clear_error() {
    let output = run(
        env!("CARGO_BIN_EXE_demo"),
        &["--bus", "kafka://127.0.0.1:9092"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unsupported bus URL kafka://127.0.0.1:9092"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = run(env!("CARGO_BIN_EXE_fleet-stats"), &["--bus", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect to Redis"), "{stderr}");
}
