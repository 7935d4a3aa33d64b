//! The coordinator process of the batch crash test (`tests/batch_crash.rs`), SIGKILLed and
//! restarted by the test.
//!
//! `batch-crash-coordinator <nats://…|redis://…> <batch id> <tasks> <output file>`: submits
//! durable batch `<batch id>` of `<tasks>` calls of the `Crash` queue's `Work` method
//! (`"ok:<i>"`), or re-attaches to it when it is already stored, and appends one line
//! `<index> <response>` per result to the output file as results arrive. Prints `complete` and
//! exits 0 when every task has a result.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use psrpc::batch::{Batch, BatchEnd, BatchError, BatchOptions};
use psrpc::durable::{Carrier, DurableClient, QueueConfig};

fn queue_config() -> QueueConfig {
    QueueConfig::default()
        .visibility_timeout(Duration::from_secs(2))
        .dedup_window(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(3600))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, batch_id, tasks, output] = args.as_slice() else {
        return Err(
            "usage: batch-crash-coordinator <broker url> <batch id> <tasks> <output>".into(),
        );
    };
    let tasks: usize = tasks.parse()?;
    let carrier: Arc<dyn Carrier> = if url.starts_with("nats://") {
        Arc::new(psrpc_nats::durable::JetStreamCarrier::connect(url).await?)
    } else {
        Arc::new(psrpc_redis::durable::RedisStreamsCarrier::connect(url).await?)
    };
    let client = DurableClient::with_config(carrier, "Crash", &queue_config()).await?;
    let requests = || (0..tasks).map(|i| format!("ok:{i}"));
    let options = BatchOptions::new()
        .max_in_flight(256)
        .timeout(Duration::from_secs(300));
    let mut batch =
        match Batch::<String>::resume(&client, batch_id, "Work", requests(), options.clone()).await
        {
            Err(BatchError::UnknownBatch(_)) => {
                let options = options.batch_id(batch_id.clone());
                Batch::durable(&client, "Work", requests(), options).await?
            }
            other => {
                println!("re-attached");
                other?
            }
        };
    println!("running");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)?;
    while let Some(item) = batch.next_item().await {
        let value = match item.result {
            Ok(v) => v,
            Err(e) => format!("error {e}"),
        };
        // One write per line: a kill leaves at most the last line cut short.
        out.write_all(format!("{} {value}\n", item.index).as_bytes())?;
    }
    match batch.end() {
        Some(BatchEnd::Completed) => {
            println!("complete");
            Ok(())
        }
        end => Err(format!("batch ended with {end:?}").into()),
    }
}
