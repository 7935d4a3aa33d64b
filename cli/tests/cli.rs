//! The `psrpc` binary against real brokers, with servers of the demo's `.proto`.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use psrpc::{Error, ErrorCode, MethodInfo, Server, ServerOptions};
use psrpc_testkit::{NatsServer, RedisServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_psrpc");
const PROTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/proto/demo.proto");

#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(string, tag = "2")]
    server_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatsRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct Stats {
    #[prost(string, tag = "1")]
    server_id: String,
    #[prost(float, tag = "2")]
    load: f32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct News {
    #[prost(string, tag = "1")]
    headline: String,
}

impl prost::Name for News {
    const NAME: &'static str = "News";
    const PACKAGE: &'static str = "demo";
}

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GET_STATS: MethodInfo = MethodInfo::multi("GetStats");
const REGION_ECHO: MethodInfo = MethodInfo::unary("RegionEcho");
const NEWS: MethodInfo = MethodInfo::subscription("News");

/// A demo server named `id`, in `region`.
async fn demo_server(bus: std::sync::Arc<dyn psrpc::Bus>, id: &str, region: &str) -> Server {
    let options = ServerOptions::default().server_id(id.to_owned());
    let server = Server::with_options("Demo", bus, options);
    server
        .register_unary(ECHO, &[], |ctx, req: Text| async move {
            if req.text.is_empty() {
                return Err(Error::new(ErrorCode::InvalidArgument, "empty text"));
            }
            Ok(Reply {
                text: req.text,
                server_id: ctx.server_id().to_owned(),
            })
        })
        .await
        .unwrap();
    server
        .register_unary(GET_STATS, &[], |ctx, _: StatsRequest| async move {
            Ok(Stats {
                server_id: ctx.server_id().to_owned(),
                load: 0.5,
            })
        })
        .await
        .unwrap();
    server
        .register_unary(REGION_ECHO, &[region], |ctx, req: Text| async move {
            Ok(Reply {
                text: req.text,
                server_id: ctx.server_id().to_owned(),
            })
        })
        .await
        .unwrap();
    server
}

/// Runs the binary to its end (off the runtime's threads).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run psrpc")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "psrpc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).expect("JSON output")
}

/// One line on stderr, a non-zero exit status, containing `needle`.
fn one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

async fn round_trips(url: &str, bus: impl Fn() -> std::sync::Arc<dyn psrpc::Bus>) {
    let _a = demo_server(bus(), "node-a", "eu").await;
    let _b = demo_server(bus(), "node-b", "us").await;
    let call = |rest: &[&str]| {
        let mut a = args(&["call", "--bus", url, "--proto", PROTO]);
        a.extend(args(rest));
        a
    };

    // ls / info / stats, as JSON.
    let ls = json(&run(args(&["ls", "--bus", url, "Demo", "--json"])).await);
    let servers = &ls[0]["servers"];
    assert_eq!(ls[0]["service"], "Demo");
    let mut ids: Vec<&str> = servers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["node-a", "node-b"]);
    assert_eq!(servers[0]["health"], "SERVING");
    let table = stdout(&run(args(&["ls", "--bus", url])).await);
    assert!(
        table.contains("node-a") && table.contains("SERVING"),
        "{table}"
    );

    let info = json(
        &run(args(&[
            "info", "--bus", url, "Demo", "--server", "node-a", "--json",
        ]))
        .await,
    );
    assert_eq!(info.as_array().unwrap().len(), 1);
    let methods: Vec<&str> = info[0]["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert!(
        methods.contains(&"RegionEcho") && methods.contains(&"GetStats"),
        "{methods:?}"
    );

    // Unary.
    let reply = json(&run(call(&["Demo.Echo", r#"{"text":"hi"}"#])).await);
    assert_eq!(reply["text"], "hi");
    assert!(
        reply["serverId"] == "node-a" || reply["serverId"] == "node-b",
        "{reply}"
    );
    // The fully qualified service name works too.
    let reply = json(&run(call(&["demo.Demo.Echo", r#"{"text":"x"}"#])).await);
    assert_eq!(reply["text"], "x");

    // Multi: one line per server; --early ends once both known servers answered.
    for extra in [
        &["--timeout", "1s"][..],
        &["--early", "--timeout", "60s"][..],
    ] {
        let mut a = call(&["Demo.GetStats"]);
        a.extend(args(extra));
        let out = stdout(&run(a).await);
        let mut lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines.sort_by_key(|l| l["server_id"].as_str().unwrap().to_owned());
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["server_id"], "node-a");
        assert_eq!(lines[0]["response"]["serverId"], "node-a");
        assert_eq!(lines[1]["response"]["load"], 0.5);
    }

    // Topic: only the server of the region answers.
    let reply = json(
        &run(call(&[
            "Demo.RegionEcho",
            "--topic",
            "us",
            r#"{"text":"t"}"#,
        ]))
        .await,
    );
    assert_eq!(reply["serverId"], "node-b");

    // Stats after those calls (summed per service).
    let stats = json(&run(args(&["stats", "--bus", url, "Demo", "--sum", "--json"])).await);
    assert_eq!(stats[0]["servers"], 2);
    let echo = stats[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "Echo")
        .expect("Echo stats")
        .clone();
    assert_eq!(echo["calls"], 2);

    // A server error: one line, its code and message, non-zero exit.
    let out = run(call(&["Demo.Echo", r#"{"text":""}"#])).await;
    one_line_error(&out, "invalid_argument: empty text");

    // Subscription: `sub` prints what a server publishes; `pub` reaches a subscriber.
    let mut child = std::process::Command::new(BIN)
        .args(args(&[
            "sub",
            "--bus",
            url,
            "--proto",
            PROTO,
            "Demo.News",
            "--count",
            "1",
            "--duration",
            "30s",
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stderr)
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("subscribed"), "{line}");
    })
    .await
    .unwrap();
    _a.publish(
        NEWS,
        &[],
        &News {
            headline: "extra".into(),
        },
    )
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let line: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["headline"], "extra");

    let client = psrpc::Client::new("Demo", bus()).await.unwrap();
    let mut news = client.subscribe::<News>(NEWS, &[]).await.unwrap();
    let out = run(args(&[
        "pub",
        "--bus",
        url,
        "--proto",
        PROTO,
        "Demo.News",
        r#"{"headline":"from cli"}"#,
    ]))
    .await;
    stdout(&out);
    let got = tokio::time::timeout(Duration::from_secs(10), news.recv())
        .await
        .expect("the published news")
        .unwrap();
    assert_eq!(got.headline, "from cli");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_nats() {
    let broker = NatsServer::start().unwrap();
    let url = broker.url();
    let mut buses = Vec::new();
    for _ in 0..3 {
        buses.push(
            std::sync::Arc::new(psrpc_nats::NatsBus::connect(&url).await.unwrap())
                as std::sync::Arc<dyn psrpc::Bus>,
        );
    }
    let next = std::sync::Mutex::new(buses);
    round_trips(&url, || next.lock().unwrap().pop().expect("a bus")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_on_redis() {
    let broker = RedisServer::start().unwrap();
    let url = broker.url();
    let mut buses = Vec::new();
    for _ in 0..3 {
        buses.push(
            std::sync::Arc::new(psrpc_redis::RedisBus::connect(&url).await.unwrap())
                as std::sync::Arc<dyn psrpc::Bus>,
        );
    }
    let next = std::sync::Mutex::new(buses);
    round_trips(&url, || next.lock().unwrap().pop().expect("a bus")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_in_one_line() {
    let broker = NatsServer::start().unwrap();
    let url = broker.url();
    let bus = std::sync::Arc::new(psrpc_nats::NatsBus::connect(&url).await.unwrap());
    let _server = demo_server(bus, "node-a", "eu").await;
    let call = |rest: &[&str]| {
        let mut a = args(&["call", "--bus", &url, "--proto", PROTO]);
        a.extend(args(rest));
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (call(&["Nope.Echo", "{}"]), "unknown service \"Nope\""),
        (call(&["Demo.Nope", "{}"]), "unknown method \"Nope\""),
        (call(&["Echo", "{}"]), "SERVICE.METHOD"),
        (
            call(&["Demo.Echo", r#"{"text": 5}"#]),
            "JSON does not match demo.Text",
        ),
        (
            call(&["Demo.Echo", r#"{"nope": "x"}"#]),
            "JSON does not match demo.Text",
        ),
        (
            call(&["Demo.Echo", "{not json"]),
            "JSON does not match demo.Text",
        ),
        (call(&["Demo.News", "{}"]), "is a subscription"),
        (
            args(&[
                "call",
                "--bus",
                &url,
                "--proto",
                "/nonexistent/x.proto",
                "Demo.Echo",
            ]),
            "no such .proto file",
        ),
        (
            args(&[
                "ls",
                "--bus",
                "nats://127.0.0.1:1",
                "--connect-timeout",
                "3s",
            ]),
            "cannot connect",
        ),
        (
            args(&["ls", "--bus", "carrier-pigeon://x"]),
            "unsupported bus URL",
        ),
        (call(&["Demo.Echo", "--meta", "novalue", "{}"]), "KEY=VALUE"),
    ];
    for (argv, needle) in cases {
        let out = run(argv.clone()).await;
        one_line_error(&out, needle);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{argv:?}"
        );
    }
}
