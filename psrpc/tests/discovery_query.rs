//! Discovery queries made right after watching starts (what the `psrpc` command-line tool
//! does) must not end before servers the view has not heard of yet have answered.

mod common;

use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::discovery::Discovery;
use psrpc::{MethodInfo, Server};

const SVC: &str = "Young";
const ECHO: MethodInfo = MethodInfo::unary("Echo");

async fn server(bus: impl psrpc::IntoBus) -> Server {
    let server = Server::new(SVC, bus);
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    server
}

/// Waits until a view of its own has heard `servers` servers of [`SVC`]: they are up and
/// answer queries.
async fn heard_by_a_witness(bus: &LocalBus, servers: usize) {
    Discovery::new(bus.clone())
        .await
        .unwrap()
        .wait_for(Duration::from_secs(5), |d| d.servers(SVC).len() == servers)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_young_view_waits_for_servers_it_has_not_heard_yet() {
    let bus = LocalBus::new();
    let near = server(bus.clone()).await;
    // Everything this server publishes arrives 50 ms late, its answers included.
    let far = server(common::SlowBus::new(bus.clone(), Duration::from_millis(50))).await;
    // Both servers are up and answer queries: a first watcher has heard them.
    heard_by_a_witness(&bus, 2).await;
    // A fresh view, as a command-line tool makes: it hears the near server first.
    let discovery = Discovery::new(bus.clone()).await.unwrap();
    discovery
        .wait_for(Duration::from_secs(1), |d| !d.servers(SVC).is_empty())
        .await
        .unwrap();
    assert_eq!(
        discovery.servers(SVC).len(),
        1,
        "only the near server heard yet"
    );

    // The view knows one server; ending when it answered would miss the far one.
    let answers = discovery
        .query(SVC, false, Duration::from_secs(1))
        .await
        .unwrap();
    let mut ids: Vec<_> = answers
        .iter()
        .map(|(info, _)| info.server_id.clone())
        .collect();
    ids.sort();
    let mut expected = vec![near.id().to_owned(), far.id().to_owned()];
    expected.sort();
    assert_eq!(ids, expected);

    // A settled view still ends as soon as every server it knows has answered.
    let asked = tokio::time::Instant::now();
    let answers = discovery
        .query(SVC, false, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_young_view_ends_its_query_once_settled_and_answered() {
    let bus = LocalBus::new();
    let one = server(bus.clone()).await;
    heard_by_a_witness(&bus, 1).await;
    let discovery = Discovery::new(bus.clone()).await.unwrap();
    let watching = tokio::time::Instant::now();
    // A long wait: the query must not take it all once the view is a heartbeat old and every
    // server it knows then has answered.
    let answers = discovery
        .query(SVC, false, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0.server_id, one.id());
    let took = watching.elapsed();
    assert!(
        took >= psrpc::discovery::DEFAULT_HEARTBEAT,
        "a young view collects until it settles: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}
