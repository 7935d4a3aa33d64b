//! A durable worker process for the crash test (`tests/durable_crash.rs`), SIGKILLed and
//! restarted by the test.
//!
//! `durable-crash-worker <nats://…|redis://…> <ledger file>`: serves the `Crash` queue's
//! `Work` method. A request `"ok:<n>"` applies its side effect, a ledger record on the broker
//! written with `TaskContext::record_effect` (once per task), logs to the ledger file that it
//! ran (`run <task>`) and what the fence said (`applied <task> <attempt>` or `refused <task>`),
//! and answers `"done <n>"`; `"fail:<n>"` always fails (to be dead-lettered). Runs until killed.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use psrpc::durable::{Carrier, Effect, QueueConfig, TaskContext, Worker, WorkerOptions};

/// Appends one line to the ledger file (one `write` with `O_APPEND`).
fn append(ledger: &std::sync::Mutex<std::fs::File>, line: &str) -> psrpc::Result<()> {
    let mut file = ledger.lock().unwrap_or_else(|e| e.into_inner());
    file.write_all(line.as_bytes())
        .map_err(|e| psrpc::Error::new(psrpc::ErrorCode::Internal, e.to_string()))
}

/// The queue settings shared by the crash test and its workers.
fn queue_config() -> QueueConfig {
    QueueConfig::default()
        .visibility_timeout(Duration::from_secs(2))
        .dedup_window(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(3600))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(ledger)) = (args.next(), args.next()) else {
        return Err("usage: durable-crash-worker <broker url> <ledger file>".into());
    };
    let carrier: Arc<dyn Carrier> = if url.starts_with("nats://") {
        Arc::new(psrpc_nats::durable::JetStreamCarrier::connect(&url).await?)
    } else {
        Arc::new(psrpc_redis::durable::RedisStreamsCarrier::connect(&url).await?)
    };
    let ledger = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger)?,
    ));
    let worker = Worker::new(carrier, "Crash")
        .options(
            WorkerOptions::default()
                .concurrency(32)
                .queue(queue_config())
                .fetch_wait(Duration::from_millis(200)),
        )
        .handle("Work", move |ctx: TaskContext, req: String| {
            let ledger = ledger.clone();
            async move {
                let (kind, n) = req.split_once(':').unwrap_or(("ok", &req));
                if kind == "fail" {
                    return Err(psrpc::Error::new(
                        psrpc::ErrorCode::Unavailable,
                        "designed to fail",
                    ));
                }
                // Reaching the effect: one line per run, written with O_APPEND in one call.
                // Without a fence these runs would each apply the effect.
                append(&ledger, &format!("run {}\n", ctx.task_id))?;
                // The side effect itself is the broker-side ledger record, written once per
                // task whatever the number of runs. Broker away (its restart): try again in
                // place rather than spend one of the task's attempts.
                let value = format!("attempt {} pid {}", ctx.attempt, std::process::id());
                let mut tries = 0;
                let effect = loop {
                    match ctx.record_effect("ledger", value.clone()).await {
                        Ok(effect) => break effect,
                        Err(e) if tries < 100 => {
                            tries += 1;
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                let line = match effect {
                    Effect::Applied => format!("applied {} {}\n", ctx.task_id, ctx.attempt),
                    Effect::AlreadyApplied(_) => format!("refused {}\n", ctx.task_id),
                };
                append(&ledger, &line)?;
                Ok(format!("done {n}"))
            }
        })
        .start()
        .await?;
    println!("ready");
    // Runs until SIGKILLed (or the test's stdin closes).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await;
    worker.shutdown().await;
    Ok(())
}
