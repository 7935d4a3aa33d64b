//! Micro-benchmarks of psrpc's per-message hot paths: envelope encode/decode, channel names
//! and sanitising, reply routing by request ID, and a whole call on the in-process bus.
//!
//! Run with `cargo bench -p psrpc-benches --bench hot_paths`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;
use prost::Message;
use psrpc::bus::LocalBus;
use psrpc::wire::{self, Request, Response};
use psrpc::{CallOptions, Channel, Client, MethodInfo, RequestContext, Server};
use tokio::sync::mpsc;

fn request(payload: usize) -> Request {
    Request {
        request_id: psrpc::wire::new_request_id(),
        client_id: psrpc::wire::new_client_id(),
        sent_at: 1_700_000_000_000_000_000,
        expiry: 1_700_000_003_000_000_000,
        raw_request: Bytes::from(vec![0xab; payload]),
        x_direct: true,
        ..Default::default()
    }
}

fn response(request_id: String) -> Response {
    Response {
        request_id,
        server_id: psrpc::wire::new_server_id(),
        sent_at: 1_700_000_000_000_000_000,
        raw_response: Bytes::from_static(&[0xab; 16]),
        ..Default::default()
    }
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for size in [16usize, 8 << 10] {
        let req = request(size);
        let encoded = wire::encode_envelope(wire::REQUEST_TYPE_URL, &req);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode_request", size), &req, |b, req| {
            b.iter(|| wire::encode_envelope(wire::REQUEST_TYPE_URL, black_box(req)));
        });
        group.bench_with_input(
            BenchmarkId::new("decode_request", size),
            &encoded,
            |b, bytes| {
                b.iter(|| {
                    let msg = wire::decode_envelope(black_box(bytes.clone())).unwrap();
                    Request::decode(msg.value).unwrap()
                });
            },
        );
        let routed = wire::with_route_key(&encoded, "Echo.REQ");
        group.bench_with_input(BenchmarkId::new("add_route_key", size), &encoded, |b, e| {
            b.iter(|| wire::with_route_key(black_box(e), "Echo.REQ"));
        });
        group.bench_with_input(BenchmarkId::new("scan_route_key", size), &routed, |b, r| {
            b.iter(|| wire::route_key(black_box(r)).map(str::len));
        });
    }
    group.finish();
}

fn channels(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel");
    let plain = Channel::request("RoomService", "GetRoom", ["eu_west_1", "room42"], true);
    let needs_escape = Channel::request("RoomService", "GetRoom", ["eu-west.1", "room/42"], true);
    let reply = Channel::response("RoomService", psrpc::wire::new_client_id());
    group.bench_function("build_request_channel", |b| {
        b.iter(|| {
            Channel::request(
                black_box("RoomService"),
                "GetRoom",
                black_box(["eu_west_1", "room42"]),
                true,
            )
        });
    });
    group.bench_function("pipe_name", |b| b.iter(|| black_box(&plain).pipe_name()));
    group.bench_function("pipe_name_escaped", |b| {
        b.iter(|| black_box(&needs_escape).pipe_name())
    });
    group.bench_function("nats_subject", |b| {
        b.iter(|| black_box(&plain).nats_subject())
    });
    group.bench_function("nats_subject_reply", |b| {
        b.iter(|| black_box(&reply).nats_subject())
    });
    group.bench_function("route_key", |b| b.iter(|| black_box(&plain).route_key()));
    group.bench_function("sanitize_clean", |b| {
        b.iter(|| psrpc::channel::sanitize(black_box("room_1234567890")))
    });
    group.bench_function("sanitize_escaped", |b| {
        b.iter(|| psrpc::channel::sanitize(black_box("eu-west.1/room")))
    });
    group.finish();
}

/// The client's routing step as it runs per reply: decode the envelope and the response, find
/// the waiting call by request ID among `pending` others, hand the reply over. This mirrors
/// `Client`'s private router with the same map and channel types, so it can run in isolation;
/// `call/local_bus` below runs the real one inside a whole call.
fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_reply");
    for pending in [1usize, 64, 10_000] {
        let map: DashMap<String, mpsc::UnboundedSender<Response>> = DashMap::new();
        let mut receivers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..pending {
            let id = psrpc::wire::new_request_id();
            let (tx, rx) = mpsc::unbounded_channel();
            map.insert(id.clone(), tx);
            receivers.push(rx);
            ids.push(id);
        }
        let target = ids[pending / 2].clone();
        let payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &response(target));
        let rx = &mut receivers[pending / 2];
        group.bench_function(BenchmarkId::from_parameter(pending), |b| {
            b.iter(|| {
                let msg = wire::decode_envelope(black_box(payload.clone())).unwrap();
                let resp = Response::decode(msg.value).unwrap();
                let delivered = map
                    .get(&resp.request_id)
                    .is_some_and(|tx| tx.send(resp).is_ok());
                assert!(delivered);
                rx.try_recv().unwrap()
            });
        });
    }
    group.finish();
}

/// The per-call reply channel: tokio's unbounded channel allocates its first block of 32 slots
/// on creation, so the slot size decides whether that allocation is small. A slot holding a
/// whole `Response` (~160 B) makes a ~5 KiB block per call; a boxed reply makes it ~0.5 KiB.
fn reply_channel(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply_channel");
    group.bench_function("inline_160B_slot", |b| {
        b.iter(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<[u64; 20]>();
            tx.send(black_box([7; 20])).unwrap();
            rx.try_recv().unwrap()
        });
    });
    group.bench_function("boxed_slot", |b| {
        b.iter(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Box<[u64; 20]>>();
            tx.send(Box::new(black_box([7; 20]))).unwrap();
            rx.try_recv().unwrap()
        });
    });
    group.bench_function("oneshot", |b| {
        b.iter(|| {
            let (tx, mut rx) = tokio::sync::oneshot::channel::<[u64; 20]>();
            tx.send(black_box([7; 20])).unwrap();
            rx.try_recv().unwrap()
        });
    });
    group.finish();
}

/// A whole unary call on the in-process bus (direct and claim paths), one at a time on a
/// current-thread runtime: encode, publish, server decode and handler task, reply, routing.
fn call(c: &mut Criterion) {
    const ECHO: MethodInfo = MethodInfo::unary("Echo");
    async fn echo(_ctx: RequestContext, req: Bytes) -> psrpc::Result<Bytes> {
        Ok(req)
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, client) = rt.block_on(async {
        let bus = LocalBus::new();
        let server = Server::new("Bench", bus.clone());
        server.register_unary(ECHO, &[], echo).await.unwrap();
        let client = Client::new("Bench", bus).await.unwrap();
        (server, client)
    });
    let body = Bytes::from_static(&[0xab; 16]);
    let mut group = c.benchmark_group("call");
    for (name, direct) in [("local_direct", true), ("local_claim", false)] {
        let opts = CallOptions::new().direct(direct);
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(client.request::<Bytes, Bytes>(ECHO, &[], &body, opts.clone()))
                    .unwrap()
            });
        });
    }
    group.finish();
    drop(client);
    rt.block_on(server.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = envelope, channels, routing, reply_channel, call
}
criterion_main!(benches);
