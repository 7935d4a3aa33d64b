//! A multi call answered by more servers than the client's reply buffer holds reports what it
//! lost as an explicit item, never silently (the conformance suite runs the same on brokers).

use std::sync::Arc;
use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::{CallOptions, Client, ClientOptions, ErrorCode, MethodInfo, Server};

const SVC: &str = "Loss";
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const SERVERS: usize = 16;

// One thread: the released handlers all publish before the client's reader runs, so the
// one-message reply buffer overflows every time.
#[tokio::test(start_paused = true)]
async fn answers_beyond_the_reply_buffer_are_reported() {
    let bus = LocalBus::new();
    let gate = Arc::new(tokio::sync::Barrier::new(SERVERS));
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        let server = Server::new(SVC, bus.clone());
        let gate = gate.clone();
        server
            .register_unary(GATHER, &[], move |ctx, _req: String| {
                let gate = gate.clone();
                async move {
                    gate.wait().await;
                    Ok(ctx.server_id().to_owned())
                }
            })
            .await
            .unwrap();
        servers.push(server);
    }
    let options = ClientOptions::default().subscription_capacity(1);
    let client = Client::with_options(SVC, bus, options).await.unwrap();
    let results = client
        .request_multi::<_, String>(
            GATHER,
            &[],
            &"q".to_string(),
            CallOptions::new().timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    let answered = results.iter().filter(|r| r.result.is_ok()).count() as u64;
    let reports: Vec<_> = results.iter().filter(|r| r.result.is_err()).collect();
    assert!(!reports.is_empty(), "a loss report: {results:?}");
    let mut lost = 0;
    for report in reports {
        assert_eq!(report.server_id, "");
        let err = report.result.as_ref().unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(err.message().contains("answers dropped"), "{err}");
        lost += report.dropped_answers().expect("a loss report");
    }
    assert!(lost > 0, "the buffer of one overflowed");
    assert_eq!(answered + lost, SERVERS as u64);
    assert_eq!(client.stats().dropped_replies, lost);
}
