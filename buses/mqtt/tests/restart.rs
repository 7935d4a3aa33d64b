//! The broker is killed (SIGKILL) and restarted on the same port while callers run
//! continuous RPCs: every call ends by its deadline (with an error while the broker is down),
//! and calls succeed again once it is back, without re-registering anything.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{bus, eventually, server};
use psrpc::{CallOptions, Client, MethodInfo, Server};
use tokio::time::Instant;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ALL: MethodInfo = MethodInfo::multi("All");

/// Every call's own deadline.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How far past its deadline a call may end on a busy 2-core machine before it counts as hung.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Calls that ended later than their deadline plus the slack.
    late: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_end_by_their_deadline_and_service_resumes() {
    let mut broker = server();
    let psrpc_server = Server::new("Restart", bus(&broker).await);
    psrpc_server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    psrpc_server
        .register_unary(ALL, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = Client::new("Restart", bus(&broker).await).await.unwrap();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let req = format!("{i}-{n}");
                    let start = Instant::now();
                    let opts = CallOptions::new().timeout(CALL_TIMEOUT);
                    let ok = if i == 3 {
                        match client
                            .request_multi::<_, String>(ALL, &[], &req, opts)
                            .await
                        {
                            Ok(multi) => {
                                let results = multi.collect_all().await;
                                results.len() == 1 && results.iter().all(|r| r.result.is_ok())
                            }
                            Err(_) => false,
                        }
                    } else {
                        match client.request::<_, String>(ECHO, &[], &req, opts).await {
                            Ok(reply) => {
                                assert_eq!(reply, req, "a reply for another call");
                                true
                            }
                            Err(_) => false,
                        }
                    };
                    if start.elapsed() > CALL_TIMEOUT + DEADLINE_SLACK {
                        tally.late.fetch_add(1, Ordering::Relaxed);
                    }
                    if ok {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    } else {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        // Pace the loop so fast failures do not spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    let ok_before = |t: &Tally| t.ok.load(Ordering::Relaxed);
    eventually("calls succeeding under load", || {
        let ok = ok_before(&tally) >= 50;
        async move { ok }
    })
    .await;

    broker.kill();
    let failed_at_kill = tally.failed.load(Ordering::Relaxed);
    eventually("calls failing while the broker is down", || {
        let failing = tally.failed.load(Ordering::Relaxed) >= failed_at_kill + 8;
        async move { failing }
    })
    .await;

    broker.restart().unwrap();
    let ok_at_restart = ok_before(&tally);
    eventually("calls succeeding again after the restart", || {
        let ok = ok_before(&tally) >= ok_at_restart + 50;
        async move { ok }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let (ok, failed, late) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.late.load(Ordering::Relaxed),
    );
    println!(r#"{{"bus":"mqtt","ok":{ok},"failed":{failed},"late":{late}}}"#);
    assert_eq!(late, 0, "every call ended by its deadline");
}
