//! A multi call with a completion condition ends as soon as the condition is met, not at a
//! timer tick after it.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use psrpc::bus::LocalBus;
use psrpc::discovery::Completion;
use psrpc::{CallOptions, Client, MethodInfo, Server};

const SVC: &str = "Early";
const GATHER: MethodInfo = MethodInfo::multi("Gather");

async fn servers(bus: &LocalBus, n: usize) -> Vec<Server> {
    let mut servers = Vec::new();
    for _ in 0..n {
        let server = Server::new(SVC, bus.clone());
        server
            .register_unary(GATHER, &[], |ctx, _req: String| async move {
                Ok(ctx.server_id().to_owned())
            })
            .await
            .unwrap();
        servers.push(server);
    }
    servers
}

// One thread: nothing but this task runs between the last answer and the poll after it, so a
// stream that still waited on its timer (even for a tick) would be found pending.
#[tokio::test]
async fn the_poll_after_the_last_awaited_answer_ends_the_call() {
    let bus = LocalBus::new();
    let servers = servers(&bus, 2).await;
    let client = Client::new(SVC, bus).await.unwrap();
    let mut answers = client
        .request_multi::<_, String>(
            GATHER,
            &[],
            &"q".to_string(),
            CallOptions::new().timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap()
        .until(Completion::count(2));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = answers.next().await.expect("an answer");
        ids.push(answer.result.unwrap());
    }
    ids.sort();
    let mut expected: Vec<String> = servers.iter().map(|s| s.id().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(answers.next().now_or_never(), Some(None), "ended at once");
    // Ended, not cancelled: the client no longer waits for the call.
    drop(answers);
    assert_eq!(client.stats().pending, 0);
}

// Without a condition the same call keeps collecting until its deadline.
#[tokio::test(start_paused = true)]
async fn without_a_condition_the_call_waits_for_its_deadline() {
    let bus = LocalBus::new();
    let _servers = servers(&bus, 2).await;
    let client = Client::new(SVC, bus).await.unwrap();
    let mut answers = client
        .request_multi::<_, String>(
            GATHER,
            &[],
            &"q".to_string(),
            CallOptions::new().timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        answers.next().await.expect("an answer").result.unwrap();
    }
    assert_eq!(answers.next().now_or_never(), None, "still collecting");
    let started = tokio::time::Instant::now();
    assert_eq!(answers.next().await, None);
    assert!(started.elapsed() > Duration::from_secs(50));
}
