//! The scenarios: raw baselines first, then psrpc on the same bus, each compared with the
//! baseline measured in the same run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use psrpc::bus::SubscriptionStats;
use psrpc::stream::Stream;
use psrpc::{CallOptions, Client, MethodInfo, RequestContext, SelectionOptions, Server};

use crate::env::{BusKind, Fabric};
use crate::flood::{self, FloodRun};
use crate::harness::{self, Budget, Caller, Flow, LatencyRun, Result, ThroughputRun};
use crate::raw::{self, Link, NatsRequestReply, PingPong, RawChannel};
use crate::report::{self, Kind, Measurement, Report};

const UNARY: MethodInfo = MethodInfo::unary("Echo");
const AFFINITY: MethodInfo = MethodInfo::affinity("Pick");
const MULTI: MethodInfo = MethodInfo::multi("Gather");
const FANOUT: MethodInfo = MethodInfo::subscription("Events");
const QUEUE: MethodInfo = MethodInfo::queue_subscription("Jobs");
const STREAM: MethodInfo = MethodInfo::stream("Upload");

/// The small payload.
pub const SMALL: usize = 16;
/// The large payload.
pub const LARGE: usize = 8 << 10;

/// Publisher tasks and in-flight window of the subscription throughput runs.
const PUB_TASKS: usize = 4;
const PUB_WINDOW: u64 = 512;
/// The stream window (psrpc's default) and the raw run it is compared with.
const STREAM_WINDOW: u64 = 64;

/// Time for subscriptions made on other connections to reach the broker.
const SETTLE: Duration = Duration::from_millis(50);

/// The raw request/reply case of a bus.
pub fn raw_rpc_case(kind: BusKind) -> &'static str {
    match kind {
        BusKind::Nats => "raw_request_reply",
        BusKind::Redis | BusKind::Mqtt | BusKind::Amqp => "raw_ping_pong",
        BusKind::Local => "raw_bus_ping_pong",
    }
}

/// Every case name run on `kind`, for `--only` and for deciding which brokers to start.
pub fn cases(kind: BusKind) -> Vec<&'static str> {
    let mut cases = vec![
        raw_rpc_case(kind),
        "rpc_direct",
        "rpc_claim",
        "rpc_affinity",
        "rpc_multi",
        "raw_fanout",
        "sub_fanout",
        "sub_queue",
        "raw_publish_w64",
        "stream",
        "raw_flood_fanout",
        "flood_fanout",
        "flood_queue",
        "mem_per_registration",
        "idle_rss",
    ];
    // Redis has no queue delivery of its own to compare with.
    if kind != BusKind::Redis {
        cases.push("raw_queue");
        cases.push("raw_flood_queue");
    } else {
        cases.push("raw_flood_pipe");
    }
    cases
}

/// Servers of the raw request/reply baseline a psrpc run with `servers` is compared with:
/// NATS queue groups spread over several responders; Redis pub/sub and the ping-pong have one.
fn raw_servers(kind: BusKind, servers: usize) -> usize {
    if kind == BusKind::Nats { servers } else { 1 }
}

async fn echo(_ctx: RequestContext, req: Bytes) -> psrpc::Result<Bytes> {
    Ok(req)
}

/// Runs the scenarios and collects the results.
pub struct Suite<'a> {
    budget: Budget,
    only: Vec<String>,
    report: Report,
    failures: Vec<String>,
    next_service: u32,
    fabric_brokers: &'a crate::env::Brokers,
}

impl<'a> Suite<'a> {
    /// A suite with `budget`, running the cases matching one of `only` (all when empty).
    pub fn new(budget: Budget, only: Vec<String>, brokers: &'a crate::env::Brokers) -> Self {
        Suite {
            budget,
            only,
            report: Report::default(),
            failures: Vec::new(),
            next_service: 0,
            fabric_brokers: brokers,
        }
    }

    /// True when `bus/case` matches the `--only` patterns.
    pub fn wants(&self, kind: BusKind, case: &str) -> bool {
        wants(&self.only, kind, case)
    }

    /// Records a measurement that has no raw counterpart.
    pub fn report_add(&mut self, m: Measurement) {
        self.report.add(m, None);
    }

    /// The report and the scenarios that failed outright.
    pub fn into_parts(self) -> (Report, Vec<String>) {
        (self.report, self.failures)
    }

    fn service(&mut self) -> String {
        self.next_service += 1;
        format!("Bench{}", self.next_service)
    }

    /// Notes a scenario that failed outright.
    pub fn fail(&mut self, what: String, err: &dyn std::fmt::Display) {
        eprintln!("FAILED {what}: {err}");
        self.failures.push(format!("{what}: {err}"));
    }

    /// Runs every wanted scenario on `kind`.
    pub async fn run_bus(&mut self, kind: BusKind) {
        let brokers = self.fabric_brokers;
        let fabric = Fabric::new(kind, brokers);
        let bus = kind.name();
        if let Err(err) = self.raw_rpc(&fabric).await {
            self.fail(format!("{bus}/{}", raw_rpc_case(kind)), &err);
        }
        if let Err(err) = self.rpc(&fabric).await {
            self.fail(format!("{bus}/rpc"), &err);
        }
        if let Err(err) = self.subscriptions(&fabric).await {
            self.fail(format!("{bus}/subscriptions"), &err);
        }
        if let Err(err) = self.stream(&fabric).await {
            self.fail(format!("{bus}/stream"), &err);
        }
        if let Err(err) = self.floods(&fabric).await {
            self.fail(format!("{bus}/flood"), &err);
        }
    }

    fn record_flood(
        &mut self,
        m: Measurement,
        run: FloodRun,
        fanout: u64,
        baseline: Option<String>,
    ) {
        let mut m = m
            .with("messages", run.published)
            .with("lost", run.lost())
            .with("dropped", run.dropped)
            .with("seconds", (run.seconds * 1e4).round() / 1e4);
        m.samples = run.delivered;
        m.errors = run.errors;
        m.ops_per_sec = Some(run.messages_per_sec(fanout));
        let messages = run.published.max(1) as f64;
        let (c0, c1) = run.cpu;
        let ours = c1.ours.saturating_sub(c0.ours) as f64 / messages;
        let broker =
            (m.bus != "local").then(|| c1.brokers.saturating_sub(c0.brokers) as f64 / messages);
        m.cpu_us_per_op = Some((ours, broker));
        if let Some(err) = &run.first_error {
            eprintln!(
                "  {}/{}: {} errors, first: {err}",
                m.bus, m.case, run.errors
            );
        }
        if run.delivered == 0 {
            self.fail(format!("{}/{} flood", m.bus, m.case), &"nothing delivered");
        }
        self.report.add(m, baseline);
    }

    /// Floods: fan-out to 1 and 4 subscribers and a queue of 4, raw and psrpc.
    async fn floods(&mut self, fabric: &Fabric<'_>) -> Result<()> {
        let kind = fabric.kind;
        let n = self.budget.flood_messages;
        if kind == BusKind::Redis && self.wants(kind, "raw_flood_pipe") {
            eprintln!("{}/raw_flood_pipe n={n}", kind.name());
            let run = flood::raw_flood_pipe(fabric, n).await?;
            let m =
                Measurement::new(kind.name(), "raw_flood_pipe", Kind::Throughput).payload(SMALL);
            self.record_flood(m, run, 1, None);
        }
        for (queue, subscribers) in [(false, 1), (false, 4), (true, 4)] {
            let fanout = if queue { 1 } else { subscribers as u64 };
            let raw_case = if queue {
                "raw_flood_queue"
            } else {
                "raw_flood_fanout"
            };
            let has_raw = !queue || flood::has_raw_queue(kind);
            if has_raw && self.wants(kind, raw_case) {
                eprintln!("{}/{raw_case} subscribers={subscribers} n={n}", kind.name());
                let run = flood::raw_flood(fabric, n, subscribers, queue).await?;
                let m = Measurement::new(kind.name(), raw_case, Kind::Throughput)
                    .servers(subscribers)
                    .payload(SMALL);
                self.record_flood(m, run, fanout, None);
            }
            let case = if queue { "flood_queue" } else { "flood_fanout" };
            if self.wants(kind, case) {
                eprintln!("{}/{case} subscribers={subscribers} n={n}", kind.name());
                let service = self.service();
                let run = flood::psrpc_flood(fabric, &service, n, subscribers, queue).await?;
                // Redis has no queue of its own: compare with the raw flood to one subscriber.
                let baseline = if has_raw {
                    report::key(kind.name(), Kind::Throughput, raw_case, subscribers, SMALL)
                } else {
                    report::key(kind.name(), Kind::Throughput, "raw_flood_fanout", 1, SMALL)
                };
                let m = Measurement::new(kind.name(), case, Kind::Throughput)
                    .servers(subscribers)
                    .payload(SMALL);
                self.record_flood(m, run, fanout, Some(baseline));
            }
        }
        Ok(())
    }

    fn record_latency(&mut self, m: Measurement, run: LatencyRun, baseline: Option<String>) {
        let mut m = m;
        m.samples = run.samples;
        m.errors = run.errors;
        m.latency = run.latencies;
        if let Some(err) = &run.first_error {
            eprintln!(
                "  {}/{}: {} errors, first: {err}",
                m.bus, m.case, run.errors
            );
        }
        if m.samples == 0 {
            self.fail(
                format!("{}/{} latency", m.bus, m.case),
                &"no call succeeded",
            );
        }
        self.report.add(m, baseline);
    }

    fn record_throughput(&mut self, m: Measurement, run: ThroughputRun, baseline: Option<String>) {
        let mut m = m;
        m.samples = run.ops;
        m.errors = run.errors;
        m.ops_per_sec = Some(run.ops_per_sec);
        // The in-process bus has no broker; idle brokers still tick a little.
        let broker = run.broker_cpu_us_per_op.filter(|_| m.bus != "local");
        m.cpu_us_per_op = run.cpu_us_per_op.map(|ours| (ours, broker));
        if run.lost > 0 {
            m.extra.insert("lost".into(), run.lost.into());
        }
        if let Some(err) = &run.first_error {
            eprintln!(
                "  {}/{}: {} errors, first: {err}",
                m.bus, m.case, run.errors
            );
        }
        if run.ops == 0 {
            self.fail(
                format!("{}/{} throughput", m.bus, m.case),
                &"nothing completed",
            );
        }
        self.report.add(m, baseline);
    }

    /// The raw request/reply baselines: 16 B with 1 (and on NATS 4) responders, 8 KiB with 1.
    async fn raw_rpc(&mut self, fabric: &Fabric<'_>) -> Result<()> {
        let kind = fabric.kind;
        let case = raw_rpc_case(kind);
        if !self.wants(kind, case) {
            return Ok(());
        }
        let mut runs = vec![(1, SMALL), (1, LARGE)];
        if kind == BusKind::Nats {
            runs.push((4, SMALL));
        }
        let budget = self.budget;
        for (servers, size) in runs {
            eprintln!("{}/{case} servers={servers} payload={size}", kind.name());
            let m = |k| {
                Measurement::new(kind.name(), case, k)
                    .servers(servers)
                    .payload(size)
            };
            let (lat, tput) = if kind == BusKind::Nats {
                let rr = NatsRequestReply::start(fabric, servers).await?;
                let lat = harness::latency(&budget, &mut rr.caller(size)).await;
                let tput = harness::throughput(&budget, |_| rr.caller(size)).await;
                (lat, tput)
            } else {
                let mut pp = PingPong::start(fabric, budget.callers + 1).await?;
                let lat = harness::latency(&budget, &mut pp.caller(0, size)).await;
                let tput = harness::throughput(&budget, |i| pp.caller(i + 1, size)).await;
                (lat, tput)
            };
            self.record_latency(m(Kind::Latency), lat, None);
            self.record_throughput(m(Kind::Throughput), tput, None);
        }
        Ok(())
    }

    /// Single, affinity and multi RPCs.
    async fn rpc(&mut self, fabric: &Fabric<'_>) -> Result<()> {
        let kind = fabric.kind;
        let single = [("rpc_direct", true), ("rpc_claim", false)];
        for (servers, size) in [(1, SMALL), (4, SMALL), (1, LARGE)] {
            if !single.iter().any(|(case, _)| self.wants(kind, case)) {
                break;
            }
            let service = self.service();
            let setup = RpcSetup::start(fabric, &service, servers, UNARY).await?;
            for (case, direct) in single {
                if !self.wants(kind, case) {
                    continue;
                }
                let opts = CallOptions::new().direct(direct);
                self.measure_rpc(&setup, kind, case, servers, size, opts)
                    .await;
            }
            setup.shutdown().await;
        }
        if self.wants(kind, "rpc_affinity") {
            let servers = 4;
            let service = self.service();
            let setup = RpcSetup::start(fabric, &service, servers, AFFINITY).await?;
            // The server whose affinity is 1.0 is taken as soon as its claim arrives; the default
            // selection would wait 200 ms after the first claim for better ones.
            let selection = SelectionOptions::for_method(AFFINITY).maximum_affinity(1.0);
            let opts = CallOptions::new().selection(selection);
            self.measure_rpc(&setup, kind, "rpc_affinity", servers, SMALL, opts)
                .await;
            setup.shutdown().await;
        }
        if self.wants(kind, "rpc_multi") {
            for servers in [1, 4] {
                let service = self.service();
                let setup = RpcSetup::start(fabric, &service, servers, MULTI).await?;
                let opts = CallOptions::new();
                self.measure_rpc(&setup, kind, "rpc_multi", servers, SMALL, opts)
                    .await;
                setup.shutdown().await;
            }
        }
        Ok(())
    }

    async fn measure_rpc(
        &mut self,
        setup: &RpcSetup,
        kind: BusKind,
        case: &'static str,
        servers: usize,
        size: usize,
        opts: CallOptions,
    ) {
        eprintln!("{}/{case} servers={servers} payload={size}", kind.name());
        let budget = self.budget;
        let base_servers = if setup.method.is_multi() {
            1
        } else {
            raw_servers(kind, servers)
        };
        let baseline = |k| {
            Some(report::key(
                kind.name(),
                k,
                raw_rpc_case(kind),
                base_servers,
                size,
            ))
        };
        let m = |k| {
            Measurement::new(kind.name(), case, k)
                .servers(servers)
                .payload(size)
        };
        let lat = harness::latency(&budget, &mut setup.caller(size, opts.clone())).await;
        self.record_latency(m(Kind::Latency), lat, baseline(Kind::Latency));
        let tput = harness::throughput(&budget, |_| setup.caller(size, opts.clone())).await;
        self.record_throughput(m(Kind::Throughput), tput, baseline(Kind::Throughput));
    }

    /// Subscription throughput: fan-out to 1 and 4 subscribers, queue to 4, raw and psrpc.
    async fn subscriptions(&mut self, fabric: &Fabric<'_>) -> Result<()> {
        let kind = fabric.kind;
        for (what, subscribers) in [("fanout", 1), ("fanout", 4), ("queue", 4)] {
            let queue = what == "queue";
            let raw_case = if queue { "raw_queue" } else { "raw_fanout" };
            let has_raw_queue = kind != BusKind::Redis;
            if (!queue || has_raw_queue) && self.wants(kind, raw_case) {
                eprintln!("{}/{raw_case} subscribers={subscribers}", kind.name());
                let run = raw_pubsub(
                    fabric,
                    &self.budget,
                    subscribers,
                    queue,
                    PUB_TASKS,
                    PUB_WINDOW,
                )
                .await?;
                let m = Measurement::new(kind.name(), raw_case, Kind::Throughput)
                    .servers(subscribers)
                    .payload(SMALL);
                self.record_throughput(m, run, None);
            }
            let case = if queue { "sub_queue" } else { "sub_fanout" };
            if self.wants(kind, case) {
                eprintln!("{}/{case} subscribers={subscribers}", kind.name());
                let service = self.service();
                let (run, dropped) =
                    psrpc_pubsub(fabric, &self.budget, &service, subscribers, queue).await?;
                // Redis has no queue of its own: each message reaching one subscriber is the
                // same work as a fan-out to one.
                let baseline = if queue && !has_raw_queue {
                    report::key(kind.name(), Kind::Throughput, "raw_fanout", 1, SMALL)
                } else {
                    report::key(kind.name(), Kind::Throughput, raw_case, subscribers, SMALL)
                };
                let m = Measurement::new(kind.name(), case, Kind::Throughput)
                    .servers(subscribers)
                    .payload(SMALL)
                    .with("dropped", dropped);
                self.record_throughput(m, run, Some(baseline));
            }
        }
        Ok(())
    }

    /// One stream, client to server, against a raw publisher with the same window.
    async fn stream(&mut self, fabric: &Fabric<'_>) -> Result<()> {
        let kind = fabric.kind;
        let raw_case = "raw_publish_w64";
        if self.wants(kind, raw_case) {
            eprintln!("{}/{raw_case}", kind.name());
            let run = raw_pubsub(fabric, &self.budget, 1, false, 1, STREAM_WINDOW).await?;
            let m = Measurement::new(kind.name(), raw_case, Kind::Throughput).payload(SMALL);
            self.record_throughput(m, run, None);
        }
        if self.wants(kind, "stream") {
            eprintln!("{}/stream", kind.name());
            let service = self.service();
            let run = psrpc_stream(fabric, &self.budget, &service).await?;
            let m = Measurement::new(kind.name(), "stream", Kind::Throughput)
                .payload(SMALL)
                .with("window", STREAM_WINDOW);
            let baseline = report::key(kind.name(), Kind::Throughput, raw_case, 1, SMALL);
            self.record_throughput(m, run, Some(baseline));
        }
        Ok(())
    }
}

/// True when `bus/case` contains one of the patterns (or there are none).
pub fn wants(only: &[String], kind: BusKind, case: &str) -> bool {
    let id = format!("{}/{case}", kind.name());
    only.is_empty() || only.iter().any(|p| id.contains(p.as_str()))
}

/// Servers on connections of their own, and one client.
struct RpcSetup {
    method: MethodInfo,
    servers: Vec<Server>,
    client: Client,
}

impl RpcSetup {
    async fn start(
        fabric: &Fabric<'_>,
        service: &str,
        servers: usize,
        method: MethodInfo,
    ) -> Result<Self> {
        let mut started = Vec::with_capacity(servers);
        for index in 0..servers {
            let server = Server::new(service.to_owned(), fabric.bus().await?);
            if method.has_affinity() {
                // Each request has one best server (by its tag); the others would do.
                let n = servers as u64;
                let affinity = Arc::new(move |req: &Bytes| {
                    if raw::tag(req).unwrap_or(0) % n == index as u64 {
                        1.0
                    } else {
                        0.5
                    }
                });
                server
                    .register_unary_with_affinity(method, &[], echo, affinity)
                    .await?;
            } else {
                server.register_unary(method, &[], echo).await?;
            }
            started.push(server);
        }
        let client = Client::new(service.to_owned(), fabric.bus().await?).await?;
        Ok(RpcSetup {
            method,
            servers: started,
            client,
        })
    }

    fn caller(&self, size: usize, opts: CallOptions) -> RpcCaller {
        // Affinity calls rotate over the servers' preferred tags; the others need one body.
        let tags = if self.method.has_affinity() {
            self.servers.len() as u64
        } else {
            1
        };
        RpcCaller {
            client: self.client.clone(),
            method: self.method,
            bodies: (0..tags).map(|t| raw::payload(size, t)).collect(),
            opts,
            expect: self.servers.len(),
        }
    }

    async fn shutdown(self) {
        let _ = self.client.close().await;
        for server in &self.servers {
            server.shutdown().await;
        }
    }
}

struct RpcCaller {
    client: Client,
    method: MethodInfo,
    bodies: Vec<Bytes>,
    opts: CallOptions,
    expect: usize,
}

impl Caller for RpcCaller {
    async fn call(&mut self, seq: u64) -> Result<()> {
        let body = &self.bodies[(seq % self.bodies.len() as u64) as usize];
        let opts = self.opts.clone();
        if self.method.is_multi() {
            // Time until every server answered. The call ends itself at that count, as a
            // caller that knows how many answers to expect would write it: dropping the
            // stream instead would also publish a cancellation for servers still working.
            let got: Vec<_> = self
                .client
                .request_multi::<Bytes, Bytes>(self.method, &[], body, opts)
                .await?
                .until(psrpc::discovery::Completion::count(self.expect))
                .collect()
                .await;
            if got.len() < self.expect {
                return Err(format!("{} of {} answers", got.len(), self.expect).into());
            }
            for answer in got {
                answer.result?;
            }
        } else {
            let _: Bytes = self.client.request(self.method, &[], body, opts).await?;
        }
        Ok(())
    }
}

/// Raw publish/subscribe: `subscribers` connections subscribed (as a queue group if `queue`),
/// `publishers` tasks publishing on one connection.
async fn raw_pubsub(
    fabric: &Fabric<'_>,
    budget: &Budget,
    subscribers: usize,
    queue: bool,
    publishers: usize,
    window: u64,
) -> Result<ThroughputRun> {
    let channel = RawChannel::new("bench.events", queue);
    let flow = Flow::new(if queue { 1 } else { subscribers as u64 }, window);
    let mut tasks = Vec::new();
    for index in 0..subscribers {
        let (link, mut payloads) = Link::subscribe(fabric, &channel, queue).await?;
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            let _link = link;
            while payloads.next().await.is_some() {
                flow.on_delivery(index);
            }
        }));
    }
    tokio::time::sleep(SETTLE).await;
    let publisher = Link::connect(fabric).await?;
    let run = harness::pubsub(budget, &flow, publishers, move |seq| {
        // Unique payloads: identical ones would be deduplicated on Redis queue channels.
        publisher.publish(&channel, raw::payload(SMALL, seq))
    })
    .await;
    for task in tasks {
        task.abort();
    }
    Ok(run)
}

/// psrpc subscriptions: a server publishes, `subscribers` clients (each on a bus of its own)
/// receive. Returns the run and the messages the subscriptions dropped.
async fn psrpc_pubsub(
    fabric: &Fabric<'_>,
    budget: &Budget,
    service: &str,
    subscribers: usize,
    queue: bool,
) -> Result<(ThroughputRun, u64)> {
    let method = if queue { QUEUE } else { FANOUT };
    let flow = Flow::new(if queue { 1 } else { subscribers as u64 }, PUB_WINDOW);
    let mut tasks = Vec::new();
    let mut stats: Vec<Arc<SubscriptionStats>> = Vec::new();
    for index in 0..subscribers {
        let client = Client::new(service.to_owned(), fabric.bus().await?).await?;
        let mut sub = client.subscribe::<Bytes>(method, &[]).await?;
        stats.push(sub.stats().clone());
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while sub.recv().await.is_some() {
                flow.on_delivery(index);
            }
        }));
    }
    tokio::time::sleep(SETTLE).await;
    let server = Server::new(service.to_owned(), fabric.bus().await?);
    let publisher = server.clone();
    let run = harness::pubsub(budget, &flow, PUB_TASKS, move |seq| {
        let server = publisher.clone();
        async move {
            server
                .publish(method, &[], &raw::payload(SMALL, seq))
                .await?;
            Ok(())
        }
    })
    .await;
    for task in tasks {
        task.abort();
    }
    server.shutdown().await;
    let dropped = stats.iter().map(|s| s.dropped()).sum();
    Ok((run, dropped))
}

/// One psrpc stream: the client sends as fast as the window allows, the server counts.
async fn psrpc_stream(
    fabric: &Fabric<'_>,
    budget: &Budget,
    service: &str,
) -> Result<ThroughputRun> {
    // The stream's own window is the only limit.
    let flow = Flow::new(1, u64::MAX / 2);
    let server = Server::new(service.to_owned(), fabric.bus().await?);
    let received = flow.clone();
    server
        .register_stream(
            STREAM,
            &[],
            move |_ctx, mut stream: Stream<Bytes, Bytes>| {
                let received = received.clone();
                async move {
                    while let Some(msg) = stream.recv().await {
                        msg?;
                        received.on_delivery(0);
                    }
                    Ok(())
                }
            },
        )
        .await?;
    let client = Client::new(service.to_owned(), fabric.bus().await?).await?;
    let stream = Arc::new(
        client
            .open_stream::<Bytes, Bytes>(STREAM, &[], CallOptions::new())
            .await?,
    );
    let sender = stream.clone();
    let run = harness::pubsub(budget, &flow, 1, move |seq| {
        let stream = sender.clone();
        async move {
            stream.send(&raw::payload(SMALL, seq)).await?;
            Ok(())
        }
    })
    .await;
    let _ = stream.close(None).await;
    let _ = client.close().await;
    server.shutdown().await;
    Ok(run)
}
