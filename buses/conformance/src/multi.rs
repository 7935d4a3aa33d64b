//! Multi calls answered by more servers than a client's reply buffer holds.

use std::sync::Arc;
use std::time::Duration;

use psrpc::client::MultiResult;
use psrpc::{CallOptions, Client, ClientOptions, ErrorCode, MethodInfo, Server};

use crate::{Harness, within};

const SVC: &str = "ConformanceMulti";
const GATHER: MethodInfo = MethodInfo::multi("Gather");

/// How many answers an item reports lost, checking the report's form.
fn reported_lost(result: &MultiResult<String>) -> Option<u64> {
    let lost = result.dropped_answers()?;
    assert_eq!(result.server_id, "");
    let err = result.result.as_ref().err()?;
    assert_eq!(err.code(), ErrorCode::ResourceExhausted);
    Some(lost)
}

/// A multi call answered at once by more servers than the client's reply buffer holds: every
/// answer is either delivered or counted in an explicit loss item, never lost silently.
pub async fn multi_call_reports_dropped_answers(h: &Harness) {
    const SERVERS: usize = 40;
    // Every handler waits for all the others, so the answers arrive in one burst.
    let gate = Arc::new(tokio::sync::Barrier::new(SERVERS));
    let bus = h.bus().await;
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
            .expect("register");
        servers.push(server);
    }
    let options = ClientOptions::default().subscription_capacity(1);
    let client = Client::with_options(SVC, h.bus().await, options)
        .await
        .expect("client");
    let opts = CallOptions::new().timeout(Duration::from_secs(1));
    let results = within(
        "multi results",
        client.request_multi::<_, String>(GATHER, &[], &"q".to_string(), opts),
    )
    .await
    .expect("multi call")
    .collect_all()
    .await;
    let answered = results.iter().filter(|r| r.result.is_ok()).count() as u64;
    let lost: u64 = results.iter().filter_map(reported_lost).sum();
    let other: Vec<_> = results
        .iter()
        .filter(|r| r.result.is_err() && reported_lost(r).is_none())
        .collect();
    assert!(other.is_empty(), "unexpected errors: {other:?}");
    assert_eq!(
        answered + lost,
        SERVERS as u64,
        "{answered} answers and {lost} reported lost out of {SERVERS}"
    );
    eprintln!("{}: {answered} answered, {lost} reported lost", h.name());
}
