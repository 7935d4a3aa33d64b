//! Discovery, health and early multi completion (`psrpc::discovery`).

use std::sync::Arc;
use std::time::Duration;

use psrpc::discovery::{Completion, Discovery, DiscoveryOptions, HealthStatus, WatchOptions};
use psrpc::{CallOptions, Client, MethodInfo, Server, ServerOptions};
use tokio::sync::Semaphore;

use crate::{Harness, PATIENCE, within};

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const GATHER: MethodInfo = MethodInfo::multi("Gather");

/// A heartbeat short enough that liveness cases end quickly.
const FAST_HEARTBEAT: Duration = Duration::from_millis(100);

fn options(announce: bool) -> ServerOptions {
    ServerOptions::default().discovery(
        DiscoveryOptions::default()
            .enabled(announce)
            .heartbeat(FAST_HEARTBEAT)
            .version("1.2.3"),
    )
}

/// A server of `svc` answering ECHO, PICK and GATHER (on topic `eu`) with its ID.
async fn id_server(h: &Harness, svc: &'static str, announce: bool) -> Server {
    let server = Server::with_options(svc, h.bus().await, options(announce));
    register_id_methods(&server).await;
    server
}

async fn register_id_methods(server: &Server) {
    for method in [ECHO, PICK] {
        server
            .register_unary(method, &[], |ctx, _req: String| async move {
                Ok(ctx.server_id().to_owned())
            })
            .await
            .expect("register");
    }
    server
        .register_unary(GATHER, &["eu"], |ctx, _req: String| async move {
            Ok(ctx.server_id().to_owned())
        })
        .await
        .expect("register");
}

async fn watch(h: &Harness, liveness: Duration) -> Discovery {
    let options = WatchOptions::default().liveness_timeout(liveness);
    Discovery::with_options(h.bus().await, options)
        .await
        .expect("discovery")
}

async fn listed(d: &Discovery, svc: &str, ids: &[&str]) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    d.wait_for(PATIENCE, |d| {
        d.servers(svc)
            .into_iter()
            .map(|s| s.server_id)
            .collect::<Vec<_>>()
            == want
    })
    .await
    .unwrap_or_else(|_| panic!("{svc} never listed exactly {want:?}: {:?}", d.servers(svc)));
}

/// A server appears with what it serves, and leaves at once when it shuts down (the goodbye,
/// not the liveness timeout, which is a minute here).
pub async fn discovery_server_appears_and_stops_cleanly(h: &Harness) {
    const SVC: &str = "DiscoveryAppear";
    let d = watch(h, Duration::from_secs(60)).await;
    assert!(d.servers(SVC).is_empty());
    let server = id_server(h, SVC, true).await;
    listed(&d, SVC, &[server.id()]).await;
    // Every registration is announced (they may arrive in separate announcements).
    d.wait_for(PATIENCE, |d| {
        d.servers(SVC)
            .first()
            .is_some_and(|s| s.registrations.len() == 3)
    })
    .await
    .expect("three registrations");
    let info = &d.servers(SVC)[0];
    assert!(info.serves("Echo", &[]));
    assert!(info.serves("Gather", &["eu"]));
    assert!(!info.serves("Gather", &[]));
    assert_eq!(info.health(), HealthStatus::Serving);
    assert_eq!(info.version, "1.2.3");
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.heartbeat_ms, 100);
    assert!(!info.psrpc_version.is_empty());
    assert!(info.started_at > 0);
    assert_eq!(d.health(SVC), HealthStatus::Serving);
    assert_eq!(d.serving(SVC, "Gather", &["eu"])[0].server_id, server.id());

    // A view opened later learns of the server by its query, before any heartbeat is due.
    let late = watch(h, Duration::from_secs(60)).await;
    listed(&late, SVC, &[server.id()]).await;

    within("shutdown", server.shutdown()).await;
    listed(&d, SVC, &[]).await;
    assert_eq!(d.health(SVC), HealthStatus::Unknown);
}

/// A server whose runtime dies says no goodbye: it drops out after the liveness timeout.
pub async fn discovery_crashed_server_drops_out(h: &Harness) {
    const SVC: &str = "DiscoveryCrash";
    let d = watch(h, Duration::from_millis(600)).await;
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    // The server lives in a runtime of its own, on a thread of its own, with its own bus.
    let connect = h.connector();
    let crashed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let bus = connect.await;
            let server = Server::with_options(SVC, bus, options(true));
            register_id_methods(&server).await;
            let _ = id_tx.send(server.id().to_owned());
            // A crash runs no destructor.
            std::mem::forget(server);
        });
        die_rx.recv().ok();
        rt.shutdown_background();
    });
    let id = within("the server to start", id_rx).await.expect("an id");
    listed(&d, SVC, &[&id]).await;
    die_tx.send(()).expect("the server thread waits");
    tokio::task::spawn_blocking(move || crashed.join())
        .await
        .expect("join")
        .expect("no panic");
    listed(&d, SVC, &[]).await;
}

/// Servers answer a stats query with their counters.
pub async fn discovery_query_returns_stats(h: &Harness) {
    const SVC: &str = "DiscoveryStats";
    let d = watch(h, Duration::from_secs(60)).await;
    let server = id_server(h, SVC, true).await;
    listed(&d, SVC, &[server.id()]).await;
    let client = Client::new(SVC, h.bus().await).await.expect("client");
    for _ in 0..3 {
        let got: String = within(
            "echo",
            client.request(ECHO, &[], &"x".to_string(), CallOptions::new()),
        )
        .await
        .expect("echo");
        assert_eq!(got, server.id());
    }
    let answers = within("query", d.query(SVC, true, PATIENCE))
        .await
        .expect("query");
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (info, stats) = &answers[0];
    assert_eq!(info.server_id, server.id());
    let stats = stats.as_ref().expect("stats asked for");
    assert_eq!(stats.received, 3);
    let echo = stats
        .methods
        .iter()
        .find(|m| m.method == "Echo")
        .expect("Echo stats");
    assert_eq!((echo.calls, echo.errors, echo.in_flight), (3, 0, 0));
    assert!(echo.p50_us >= 1 && echo.p50_us <= echo.p99_us);
    // Without stats asked, none come.
    let answers = within("query", d.query(SVC, false, PATIENCE))
        .await
        .expect("query");
    assert!(answers[0].1.is_none());
}

/// Shutdown turns a server not serving before it drains: its health flips (seen by a
/// watcher), and while it finishes its running call every new call, queue or claimed, goes to
/// the other server. The running call still completes.
pub async fn health_flips_on_shutdown_and_draining_server_takes_no_new_call(h: &Harness) {
    const SVC: &str = "DiscoveryDrain";
    let d = watch(h, Duration::from_secs(60)).await;
    let held = Arc::new(Semaphore::new(0));
    let draining = Server::with_options(SVC, h.bus().await, options(true));
    let gate = held.clone();
    draining
        .register_unary(ECHO, &[], move |ctx, req: String| {
            let gate = gate.clone();
            async move {
                if req == "hold" {
                    let _ = gate.acquire().await;
                }
                Ok(ctx.server_id().to_owned())
            }
        })
        .await
        .expect("register");
    draining
        .register_unary(PICK, &[], |ctx, _req: String| async move {
            Ok(ctx.server_id().to_owned())
        })
        .await
        .expect("register");
    listed(&d, SVC, &[draining.id()]).await;
    let mut health = d.watch_health(SVC);
    assert_eq!(*health.borrow_and_update(), HealthStatus::Serving);

    let client = Client::new(SVC, h.bus().await).await.expect("client");
    let long = CallOptions::new().timeout(PATIENCE * 2);
    let running = {
        let client = client.clone();
        let long = long.clone();
        tokio::spawn(async move {
            client
                .request::<_, String>(ECHO, &[], &"hold".to_string(), long)
                .await
        })
    };
    within("the held call to start", async {
        while draining.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let other = Server::with_options(SVC, h.bus().await, options(true));
    register_id_methods(&other).await;
    listed(&d, SVC, &[draining.id(), other.id()]).await;

    let stopping = {
        let draining = draining.clone();
        tokio::spawn(async move { draining.shutdown().await })
    };
    // The watcher sees the flip only once every server of the service is not serving:
    // follow the draining server itself.
    d.wait_for(PATIENCE, |d| {
        d.servers(SVC)
            .iter()
            .any(|s| s.server_id == draining.id() && s.health() == HealthStatus::NotServing)
    })
    .await
    .expect("the draining server announced not serving");
    assert_eq!(draining.health(), HealthStatus::NotServing);
    assert_eq!(*health.borrow_and_update(), HealthStatus::Serving);

    for i in 0..20 {
        let method = if i % 2 == 0 { ECHO } else { PICK };
        let got: String = within(
            "a call during the drain",
            client.request(method, &[], &"x".to_string(), long.clone()),
        )
        .await
        .expect("answered");
        assert_eq!(got, other.id(), "call {i} went to the draining server");
    }
    assert_eq!(draining.stats().received, 1);

    held.add_permits(1);
    let first = within("the held call", running).await.expect("join");
    assert_eq!(first.expect("the running call completes"), draining.id());
    within("shutdown", stopping).await.expect("join");
    listed(&d, SVC, &[other.id()]).await;

    // The application's own health flip: the watcher sees the service not serving.
    other.set_health(HealthStatus::NotServing);
    within("the watcher sees not serving", async {
        while *health.borrow_and_update() != HealthStatus::NotServing {
            health.changed().await.expect("watching");
        }
    })
    .await;
    other.set_health(HealthStatus::Serving);
    within("the watcher sees serving", async {
        while *health.borrow_and_update() != HealthStatus::Serving {
            health.changed().await.expect("watching");
        }
    })
    .await;
    // Serving again, it takes calls again once it rejoined its channels.
    within("a call answered after serving again", async {
        loop {
            let short = CallOptions::new().timeout(Duration::from_millis(500));
            if let Ok(id) = client
                .request::<_, String>(ECHO, &[], &"x".to_string(), short)
                .await
            {
                assert_eq!(id, other.id());
                return;
            }
        }
    })
    .await;
}

/// A multi call told to end when every known server answered ends at once (long before its
/// one-minute timeout), with 1 and with 4 servers; a count ends it after that many answers.
pub async fn early_multi_completion_with_one_and_four_servers(h: &Harness) {
    const SVC: &str = "DiscoveryEarly";
    let d = watch(h, Duration::from_secs(60)).await;
    let client = Client::new(SVC, h.bus().await).await.expect("client");
    let minute = CallOptions::new().timeout(Duration::from_secs(60));
    let mut servers = Vec::new();
    for n in [1usize, 4] {
        while servers.len() < n {
            servers.push(id_server(h, SVC, true).await);
        }
        let mut ids: Vec<&str> = servers.iter().map(|s| s.id()).collect();
        ids.sort();
        listed(&d, SVC, &ids).await;
        d.wait_for(PATIENCE, |d| d.serving(SVC, "Gather", &["eu"]).len() == n)
            .await
            .expect("every server announced Gather");
        let expect = d.all_known(SVC, "Gather", &["eu"]);
        assert_eq!(expect, Completion::servers(ids.clone()));
        let results = within(
            "an early multi call",
            client
                .request_multi::<_, String>(GATHER, &["eu"], &"q".to_string(), minute.clone())
                .await
                .expect("multi")
                .until(expect)
                .collect_all(),
        )
        .await;
        let mut answered: Vec<String> = results.into_iter().map(|r| r.result.unwrap()).collect();
        answered.sort();
        assert_eq!(answered, ids);
    }
    let results = within(
        "a multi call ending after two answers",
        client
            .request_multi::<_, String>(GATHER, &["eu"], &"q".to_string(), minute.clone())
            .await
            .expect("multi")
            .until(Completion::count(2))
            .collect_all(),
    )
    .await;
    assert!((2..=4).contains(&results.len()), "{results:?}");
}

/// A server that does not announce itself (as Go servers do not) is never listed, yet answers:
/// unary calls reach it, a plain multi call collects it within its timeout, and an early multi
/// call still ends once the known servers answered.
pub async fn non_announcing_server_still_answers_within_timeout(h: &Harness) {
    const SVC: &str = "DiscoveryQuiet";
    const QUIET_ONLY: &str = "DiscoveryQuietOnly";
    let d = watch(h, Duration::from_secs(60)).await;
    let known = id_server(h, SVC, true).await;
    let quiet = id_server(h, SVC, false).await;
    let alone = id_server(h, QUIET_ONLY, false).await;
    listed(&d, SVC, &[known.id()]).await;
    d.wait_for(PATIENCE, |d| d.serving(SVC, "Gather", &["eu"]).len() == 1)
        .await
        .expect("the known server announced Gather");

    let client = Client::new(QUIET_ONLY, h.bus().await)
        .await
        .expect("client");
    let got: String = within(
        "a call to a quiet server",
        client.request(ECHO, &[], &"x".to_string(), CallOptions::new()),
    )
    .await
    .expect("answered");
    assert_eq!(got, alone.id());

    let client = Client::new(SVC, h.bus().await).await.expect("client");
    let timeout = CallOptions::new().timeout(Duration::from_millis(1500));
    let results = within(
        "a plain multi call",
        client
            .request_multi::<_, String>(GATHER, &["eu"], &"q".to_string(), timeout)
            .await
            .expect("multi")
            .collect_all(),
    )
    .await;
    let mut answered: Vec<String> = results.into_iter().map(|r| r.result.unwrap()).collect();
    answered.sort();
    let mut want = vec![known.id().to_owned(), quiet.id().to_owned()];
    want.sort();
    assert_eq!(answered, want);

    let results = within(
        "an early multi call",
        client
            .request_multi::<_, String>(
                GATHER,
                &["eu"],
                &"q".to_string(),
                CallOptions::new().timeout(Duration::from_secs(60)),
            )
            .await
            .expect("multi")
            .until(d.all_known(SVC, "Gather", &["eu"]))
            .collect_all(),
    )
    .await;
    assert!(
        results.iter().any(|r| r.server_id == known.id()),
        "{results:?}"
    );
    assert!(d.servers(SVC).iter().all(|s| s.server_id != quiet.id()));
    assert!(d.servers(QUIET_ONLY).is_empty());
}
