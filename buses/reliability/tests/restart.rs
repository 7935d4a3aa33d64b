//! The broker is killed (SIGKILL) and restarted on the same port while callers run continuous
//! RPCs and subscribers receive.
//!
//! Checked: every call ends by its deadline with a clear error (`unavailable` or
//! `deadline_exceeded`, never a hang); calls succeed again within 2 s of the broker being back;
//! fan-out, queue and topic subscriptions receive again without re-subscribing; no task,
//! pending call or subscription is left behind. Prints a one-line JSON summary.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, Kind, PATIENCE, alive_tasks, ms, wait_until, within};
use psrpc::{CallOptions, Client, ErrorCode, MethodInfo, SelectionOptions, Server};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const SVC: &str = "Restart";
/// Queue-routed, answered directly by a Rust server (two messages per call).
const ECHO: MethodInfo = MethodInfo::unary("Echo");
/// Affinity-routed: the full claim exchange (four messages per call).
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const JOBS: MethodInfo = MethodInfo::queue_subscription("Jobs");
/// The queue subscription's topic. On NATS every queue method of a service and topic tuple
/// shares one queue subject, so a queue subscriber on another connection than the `Echo`
/// server would take (and drop) half of its requests; a topic of its own keeps them apart.
const JOBS_TOPIC: [&str; 1] = ["jobs"];

/// Every call's own deadline.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How far past its deadline a call may end on a noisy 2-core machine before it counts as hung.
const DEADLINE_SLACK: Duration = Duration::from_millis(750);
/// The recovery bound of the issue.
const RECOVERY_BOUND: Duration = Duration::from_secs(2);

/// One finished call.
struct Outcome {
    method: &'static str,
    start: Instant,
    end: Instant,
    code: Option<ErrorCode>,
}

#[derive(Default)]
struct Log {
    outcomes: Mutex<Vec<Outcome>>,
}

impl Log {
    fn push(&self, outcome: Outcome) {
        self.outcomes.lock().unwrap().push(outcome);
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| f(o))
            .count()
    }

    /// End of the first successful call of `method` that started at or after `since`.
    fn first_ok_since(&self, method: &str, since: Instant) -> Option<Instant> {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.method == method && o.code.is_none() && o.start >= since)
            .map(|o| o.end)
            .min()
    }
}

/// What one subscriber has seen: the highest sequence number and when it arrived.
#[derive(Default)]
struct Seen {
    last_seq: AtomicU64,
    count: AtomicU64,
}

fn spawn_caller(
    client: Client,
    method: MethodInfo,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let mut opts = CallOptions::new().timeout(CALL_TIMEOUT);
            if method.has_affinity() {
                // One server: take its claim at once instead of waiting out the window.
                opts = opts.selection(
                    SelectionOptions::for_method(method).short_circuit_timeout(Duration::ZERO),
                );
                opts.selection.as_mut().unwrap().accept_first_available = true;
            }
            let start = Instant::now();
            let result = client
                .request::<_, String>(method, &[], &n.to_string(), opts)
                .await;
            let end = Instant::now();
            let failed = result.is_err();
            if let Ok(reply) = &result {
                assert_eq!(reply, &n.to_string(), "a reply for another call");
            }
            log.push(Outcome {
                method: method.name(),
                start,
                end,
                code: result.err().map(|e| e.code()),
            });
            // Pace the loop so fast failures do not spin; successes run back to back.
            if failed {
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    })
}

fn spawn_subscriber(
    mut sub: psrpc::client::TypedSubscription<String>,
    seen: Arc<Seen>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.recv().await {
            let seq: u64 = msg.parse().expect("a sequence number");
            seen.last_seq.fetch_max(seq, Ordering::Relaxed);
            seen.count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

async fn broker_restart_under_load(kind: Kind) {
    let mut broker = Broker::start(kind);
    let (server_bus, client_bus, sub_bus) =
        (broker.bus().await, broker.bus().await, broker.bus().await);
    let buses = [&server_bus, &client_bus, &sub_bus];

    let server = Server::new(SVC, server_bus.arc());
    for method in [ECHO, PICK] {
        server
            .register_unary(method, &[], |_ctx, req: String| async move { Ok(req) })
            .await
            .unwrap();
    }
    let client = Client::new(SVC, client_bus.arc()).await.unwrap();
    let subscriber = Client::new(SVC, sub_bus.arc()).await.unwrap();
    let seen: [Arc<Seen>; 3] = Default::default();
    let subs = [
        subscriber.subscribe::<String>(EVENTS, &[]).await.unwrap(),
        subscriber
            .subscribe::<String>(JOBS, &JOBS_TOPIC)
            .await
            .unwrap(),
        subscriber
            .subscribe::<String>(EVENTS, &["eu"])
            .await
            .unwrap(),
    ];
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .zip(&seen)
        .map(|(sub, seen)| spawn_subscriber(sub, seen.clone()))
        .collect();
    let subscriptions_before: Vec<_> = buses.iter().map(|b| b.subscriptions()).collect();
    let tasks_before = alive_tasks();

    // Load: three callers and a publisher to the three subscriptions.
    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = vec![
        spawn_caller(client.clone(), ECHO, log.clone(), stop.clone()),
        spawn_caller(client.clone(), ECHO, log.clone(), stop.clone()),
        spawn_caller(client.clone(), PICK, log.clone(), stop.clone()),
    ];
    let published = Arc::new(AtomicU64::new(0));
    let publish_errors = Arc::new(AtomicU64::new(0));
    load.push(tokio::spawn({
        let (server, stop) = (server.clone(), stop.clone());
        let (published, publish_errors) = (published.clone(), publish_errors.clone());
        async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let msg = seq.to_string();
                for (method, topics) in [(EVENTS, &[][..]), (JOBS, &JOBS_TOPIC), (EVENTS, &["eu"])]
                {
                    if server.publish(method, topics, &msg).await.is_err() {
                        publish_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                published.store(seq, Ordering::Relaxed);
                // A steady stream, not a flood: one message per subscription every 5 ms.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }));

    let warmup = wait_until("calls and deliveries flow", PATIENCE, || {
        log.count(|o| o.code.is_none() && o.method == ECHO.name()) >= 200
            && log.count(|o| o.code.is_none() && o.method == PICK.name()) >= 50
            && seen.iter().all(|s| s.count.load(Ordering::Relaxed) >= 5)
    })
    .await;

    // The outage: SIGKILL, then wait until every connection noticed and calls failed.
    let ok_before_kill = log.count(|o| o.code.is_none());
    let killed_at = Instant::now();
    broker.kill();
    wait_until(
        "every bus notices the outage and calls fail",
        PATIENCE,
        || {
            buses.iter().all(|b| b.noticed_outage())
                && log.count(|o| o.start >= killed_at && o.code.is_some()) >= 3
        },
    )
    .await;
    broker.restart();
    let back_at = Instant::now();
    let outage = back_at - killed_at;
    let seq_at_restart = published.load(Ordering::Relaxed);

    // Calls of both kinds succeed again, and every subscription receives again: each time is
    // taken from the broker being back.
    let mut recovery = BTreeMap::new();
    let mut resumed = [None; 3];
    within("calls and subscriptions to recover", PATIENCE, async {
        loop {
            for method in [ECHO.name(), PICK.name()] {
                if let Some(at) = log.first_ok_since(method, back_at) {
                    recovery.entry(method).or_insert(at - back_at);
                }
            }
            for (s, resumed) in seen.iter().zip(&mut resumed) {
                if resumed.is_none() && s.last_seq.load(Ordering::Relaxed) > seq_at_restart {
                    *resumed = Some(back_at.elapsed());
                }
            }
            if recovery.len() == 2 && resumed.iter().all(Option::is_some) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let resumed = resumed.map(Option::unwrap_or_default);
    // Keep the load on a little after recovery, so steady state is in the figures too.
    let ok_now = log.count(|o| o.code.is_none());
    wait_until("more calls after the recovery", PATIENCE, || {
        log.count(|o| o.code.is_none()) >= ok_now + 200
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        within("the load tasks to stop", PATIENCE, task)
            .await
            .unwrap();
    }

    // Every call ended by its deadline, with a clear error when it failed.
    let outcomes = std::mem::take(&mut *log.outcomes.lock().unwrap());
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut worst_overrun = Duration::ZERO;
    let mut during_outage = 0;
    let recovered_at = back_at + recovery.values().max().copied().unwrap_or_default();
    for o in &outcomes {
        let took = o.end - o.start;
        worst_overrun = worst_overrun.max(took.saturating_sub(CALL_TIMEOUT));
        assert!(
            took <= CALL_TIMEOUT + DEADLINE_SLACK,
            "a call took {took:?}, past its {CALL_TIMEOUT:?} deadline ({:?})",
            o.code
        );
        if let Some(code) = &o.code {
            assert!(
                matches!(code, ErrorCode::Unavailable | ErrorCode::DeadlineExceeded),
                "unexpected error {code} during the restart"
            );
            *errors.entry(code.to_string()).or_default() += 1;
        }
        if o.end >= killed_at && o.start <= recovered_at {
            during_outage += 1;
        }
    }
    for (method, took) in &recovery {
        assert!(
            *took <= RECOVERY_BOUND,
            "{method} calls took {took:?} to recover after the broker came back"
        );
    }

    // Nothing left behind: pending calls, handlers, subscriptions, tasks.
    assert_eq!(client.stats().pending, 0);
    wait_until("handlers to finish", PATIENCE, || server.in_flight() == 0).await;
    let subscriptions_after: Vec<_> = buses.iter().map(|b| b.subscriptions()).collect();
    assert_eq!(
        subscriptions_after, subscriptions_before,
        "bus subscriptions"
    );
    let settle = wait_until("tasks to return to the baseline", PATIENCE, || {
        alive_tasks() <= tasks_before
    })
    .await;
    let tasks_after = alive_tasks();

    let ok = outcomes.iter().filter(|o| o.code.is_none()).count();
    let errors_json = errors
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    let delivered: u64 = seen.iter().map(|s| s.count.load(Ordering::Relaxed)).sum();
    println!(
        "{{\"test\":\"broker_restart_under_load\",\"bus\":\"{}\",\"calls\":{},\"ok\":{ok},\
         \"ok_before_kill\":{ok_before_kill},\"warmup_ms\":{},\"errors\":{{{errors_json}}},\"calls_during_outage\":{during_outage},\
         \"outage_ms\":{},\"recovery_ms\":{{\"unary_direct\":{},\"affinity_claimed\":{}}},\
         \"subscriptions_resumed_ms\":{{\"fanout\":{},\"queue\":{},\"topic\":{}}},\
         \"worst_deadline_overrun_ms\":{},\"published\":{},\"publish_errors\":{},\
         \"delivered\":{delivered},\"tasks_before\":{tasks_before},\"tasks_after\":{tasks_after},\
         \"tasks_settle_ms\":{}}}",
        kind.name(),
        outcomes.len(),
        ms(warmup),
        ms(outage),
        ms(recovery[ECHO.name()]),
        ms(recovery[PICK.name()]),
        ms(resumed[0]),
        ms(resumed[1]),
        ms(resumed[2]),
        ms(worst_overrun),
        published.load(Ordering::Relaxed),
        publish_errors.load(Ordering::Relaxed),
        ms(settle),
    );
    drop(sub_tasks);
}

on_nats_and_redis!(broker_restart_under_load);
