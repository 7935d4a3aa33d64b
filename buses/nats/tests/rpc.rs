//! End-to-end RPC over NATS: psrpc clients and servers on separate connections.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{WAIT, bus, nats};
use futures::StreamExt;
use psrpc::{CallOptions, Client, MethodInfo, Server};

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const REGION_ECHO: MethodInfo = MethodInfo::unary("RegionEcho");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const JOBS: MethodInfo = MethodInfo::queue_subscription("Jobs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_nats() {
    let server = nats();
    let (bus1, bus2, client_bus) = (bus(&server).await, bus(&server).await, bus(&server).await);

    let s1 = Server::new("Svc", bus1.clone());
    let s2 = Server::new("Svc", bus2.clone());
    for srv in [&s1, &s2] {
        let id = srv.id().to_owned();
        srv.register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
            .await
            .unwrap();
        srv.register_unary(GATHER, &[], move |_ctx, _req: String| {
            let id = id.clone();
            async move { Ok(id) }
        })
        .await
        .unwrap();
    }
    s1.register_unary(
        REGION_ECHO,
        &["eu-west.1/🚀"],
        |ctx, req: String| async move { Ok(format!("{req}@{}", ctx.topics().join(","))) },
    )
    .await
    .unwrap();
    // Affinity: every server claims, the caller picks the best.
    s1.register_unary_with_affinity(
        PICK,
        &[],
        |ctx, _req: String| async move { Ok(ctx.server_id().to_string()) },
        std::sync::Arc::new(|_req: &String| 0.25),
    )
    .await
    .unwrap();
    s2.register_unary_with_affinity(
        PICK,
        &[],
        |ctx, _req: String| async move { Ok(ctx.server_id().to_string()) },
        std::sync::Arc::new(|_req: &String| 0.75),
    )
    .await
    .unwrap();

    let client = Client::new("Svc", client_bus.clone()).await.unwrap();

    // Unary, direct path (Rust servers answer queue calls without claims) and claim path.
    for direct in [true, false] {
        let reply: String = client
            .request(
                ECHO,
                &[],
                &format!("hi {direct}"),
                CallOptions::new().direct(direct),
            )
            .await
            .unwrap();
        assert_eq!(reply, format!("hi {direct}"));
    }

    // Multi to two servers on separate connections.
    let answers: Vec<_> = tokio::time::timeout(
        WAIT,
        client
            .request_multi::<String, String>(GATHER, &[], &String::new(), CallOptions::new())
            .await
            .unwrap()
            .take(2)
            .collect(),
    )
    .await
    .expect("two answers");
    let ids: HashSet<_> = answers
        .into_iter()
        .map(|a| {
            assert_eq!(a.result.as_deref().ok(), Some(a.server_id.as_str()));
            a.server_id
        })
        .collect();
    assert_eq!(ids, HashSet::from([s1.id().to_owned(), s2.id().to_owned()]));

    // A topic that needs sanitising on the subject.
    let reply: String = client
        .request(
            REGION_ECHO,
            &["eu-west.1/🚀"],
            &"r".to_string(),
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(reply, "r@eu-west.1/🚀");
    // Nobody serves this topic.
    let err = client
        .request::<String, String>(
            REGION_ECHO,
            &["nowhere"],
            &"r".to_string(),
            CallOptions::new()
                .timeout(Duration::from_millis(300))
                .direct(false),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            psrpc::ErrorCode::Unavailable | psrpc::ErrorCode::DeadlineExceeded
        ),
        "{err:?}"
    );

    // Affinity picks the higher claim.
    let picked: String = client
        .request(PICK, &[], &String::new(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(picked, s2.id());

    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_over_nats() {
    let server = nats();
    // A service of its own: on NATS, queue subscriptions share `SRV.Svc.Q` and group `bus` with
    // the service's queue RPCs, so mixing them with RPC servers would steal deliveries (as in Go).
    let (pub_bus, sub_bus1, sub_bus2) =
        (bus(&server).await, bus(&server).await, bus(&server).await);
    let publisher = Server::new("Feed", pub_bus);
    let c1 = Client::new("Feed", sub_bus1).await.unwrap();
    let c2 = Client::new("Feed", sub_bus2).await.unwrap();

    let mut e1 = c1.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut e2 = c2.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut j1 = c1.subscribe::<String>(JOBS, &[]).await.unwrap();
    let mut j2 = c2.subscribe::<String>(JOBS, &[]).await.unwrap();

    publisher
        .publish(EVENTS, &[], &"ev".to_string())
        .await
        .unwrap();
    for sub in [&mut e1, &mut e2] {
        let got = tokio::time::timeout(WAIT, sub.recv()).await.unwrap();
        assert_eq!(got.as_deref(), Some("ev"));
    }

    const N: usize = 20;
    for i in 0..N {
        publisher
            .publish(JOBS, &[], &format!("job{i}"))
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let collect = async {
        while seen.len() < N {
            tokio::select! {
                Some(j) = j1.recv() => assert!(seen.insert(j), "duplicate job"),
                Some(j) = j2.recv() => assert!(seen.insert(j), "duplicate job"),
            }
        }
    };
    tokio::time::timeout(WAIT, collect).await.expect("all jobs");
    assert_eq!(seen.len(), N);
}
