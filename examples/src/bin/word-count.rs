//! Scatter/gather: a coordinator splits a text into chunks, submits them as one durable batch,
//! and workers (here or in other processes) count the words of each chunk; the coordinator
//! merges the counts as results stream in, with a progress bar.
//!
//! ```sh
//! cargo run -p psrpc-examples --bin word-count                  # coordinator and 4 workers in one process
//!
//! nats-server -js -p 4222 &
//! cargo run -p psrpc-examples --bin word-count -- --role server --bus nats://127.0.0.1:4222 &
//! cargo run -p psrpc-examples --bin word-count -- --role server --bus nats://127.0.0.1:4222 &
//! cargo run -p psrpc-examples --bin word-count -- --role client --bus nats://127.0.0.1:4222 --batch-id wc-1
//! ```
//!
//! Kill a worker mid-batch: its chunks come back after the visibility timeout (3 s) and another
//! worker counts them. Kill the coordinator and start it again with the same `--batch-id`: it
//! re-attaches, gets what finished meanwhile and waits for the rest. Options: `--role
//! server|client|both` (both by default; `worker` and `coordinator` are the same roles), `--bus URL` (`nats://…` with JetStream or
//! `redis://…`; in-process without), `--chunks N` (2000), `--workers N` (in-process workers for
//! `both`, 4), `--batch-id ID`, `--no-progress` (plain lines instead of the bar).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use psrpc::batch::BatchError;
use psrpc::durable::{Carrier, TaskContext, WorkerHandle};
use psrpc_examples::wordcount::{
    Chunk, Counts, WordCountDurableClient, WordCountDurableWorker, word_count_durable_worker,
};

const VOCABULARY: [&str; 12] = [
    "pub", "sub", "broker", "queue", "worker", "task", "batch", "result", "retry", "rust",
    "stream", "ack",
];

/// The text's chunk `index`: 50 words picked by a small deterministic generator, so every run
/// (and a restarted coordinator) has the same text.
fn chunk(index: u32) -> Chunk {
    let mut state = u64::from(index)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let words: Vec<&str> = (0..50)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            VOCABULARY[(state >> 33) as usize % VOCABULARY.len()]
        })
        .collect();
    Chunk {
        index,
        text: words.join(" "),
    }
}

/// A worker that counts words.
struct Counter {
    name: String,
}

impl WordCountDurableWorker for Counter {
    async fn count(&self, _ctx: TaskContext, chunk: Chunk) -> psrpc::Result<Counts> {
        let mut words = HashMap::new();
        for word in chunk.text.split_whitespace() {
            *words.entry(word.to_owned()).or_insert(0) += 1;
        }
        // Some work, so the progress bar has something to show.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(Counts {
            words,
            worker: self.name.clone(),
        })
    }
}

const USAGE: &str = "\
Scatter/gather: a coordinator submits a text's chunks as one durable batch; workers count
the words of each chunk.

Usage: word-count [--bus URL] [--role both|server|client] [--chunks N] [--workers N]
                  [--batch-id ID] [--no-progress]

Options:
  --bus URL       nats://HOST:PORT (with JetStream) or redis://HOST:PORT; without it, an
                  in-process carrier
  --role ROLE     both (default): the coordinator and --workers workers in this one process;
                  server (or worker): count chunks until Ctrl-C;
                  client (or coordinator): submit the batch, print the counts, exit
  --chunks N      chunks in the batch (2000)
  --workers N     in-process workers for role both (4)
  --batch-id ID   re-attach to batch ID if it exists (after a coordinator restart)
  --no-progress   plain lines instead of the progress bar
  -h, --help      print this help

Two terminals (or more workers), one broker:
  word-count --bus nats://127.0.0.1:4222 --role server
  word-count --bus nats://127.0.0.1:4222 --role client";

struct Args {
    role: String,
    bus: Option<String>,
    chunks: u32,
    workers: usize,
    batch_id: Option<String>,
    progress: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        role: "both".into(),
        bus: None,
        chunks: 2000,
        workers: 4,
        batch_id: None,
        progress: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match name.as_str() {
            // `server` and `client`, as every example spells them; `worker` and
            // `coordinator`, as this one's own words.
            "--role" => {
                out.role = match value()?.as_str() {
                    "both" => "both".into(),
                    "server" | "worker" => "worker".into(),
                    "client" | "coordinator" => "coordinator".into(),
                    other => {
                        return Err(format!(
                            "--role must be server (worker), client (coordinator) or both, not {other}"
                        ));
                    }
                }
            }
            "--chunks" => out.chunks = value()?.parse().map_err(|e| format!("--chunks: {e}"))?,
            "--workers" => out.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--batch-id" => out.batch_id = Some(value()?),
            "--no-progress" => out.progress = false,
            "--bus" => out.bus = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if out.role != "both" && out.bus.as_deref().is_none_or(|url| url == "local") {
        return Err(
            "--role server and --role client need --bus URL: an in-process carrier is not \
             shared between processes"
                .into(),
        );
    }
    Ok(out)
}

async fn start_worker(carrier: Arc<dyn Carrier>, name: String) -> WorkerHandle {
    word_count_durable_worker(carrier, Counter { name })
        .start()
        .await
        .unwrap_or_else(|err| fail(&format!("cannot start a worker: {err}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args = args().unwrap_or_else(|msg| {
        eprintln!("error: {msg}\n\n{USAGE}");
        std::process::exit(2);
    });
    let carrier = psrpc_examples::carrier(args.bus.as_deref())
        .await
        .unwrap_or_else(|msg| fail(&msg));
    println!("carrier: {}", args.bus.as_deref().unwrap_or("in-process"));

    if args.role == "worker" {
        let name = format!("worker-{}", std::process::id());
        let worker = start_worker(carrier, name.clone()).await;
        psrpc_examples::serve_until_stopped(&name).await;
        let stats = worker.shutdown().await;
        println!("{name}: {} chunks counted", stats.succeeded);
        return;
    }
    let mut workers = Vec::new();
    if args.role == "both" {
        for i in 0..args.workers {
            workers.push(start_worker(carrier.clone(), format!("worker-{i}")).await);
        }
    }
    let client = WordCountDurableClient::new(carrier)
        .await
        .unwrap_or_else(|err| fail(&format!("cannot open the queue: {err}")));
    let chunks = (0..args.chunks).map(chunk);
    let options = WordCountDurableClient::batch_count_options()
        .max_in_flight(256)
        .timeout(Duration::from_secs(600));
    let submitted = match &args.batch_id {
        Some(id) => match client
            .resume_batch_count(id, chunks.clone(), options.clone())
            .await
        {
            Err(BatchError::UnknownBatch(_)) => {
                client
                    .batch_count(chunks, options.batch_id(id.clone()))
                    .await
            }
            resumed => {
                println!("re-attached to batch {id}");
                resumed
            }
        },
        None => client.batch_count(chunks, options).await,
    };
    let mut batch = submitted.unwrap_or_else(|err| fail(&format!("cannot submit: {err}")));
    println!("batch {}: {} chunks", batch.id(), args.chunks);

    let bar = if args.progress {
        ProgressBar::new(u64::from(args.chunks))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chunks {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut totals: HashMap<String, u64> = HashMap::new();
    let mut by_worker: HashMap<String, u64> = HashMap::new();
    let mut failures = 0usize;
    while let Some(item) = batch.next().await {
        match item.result {
            Ok(counts) => {
                for (word, n) in counts.words {
                    *totals.entry(word).or_insert(0) += u64::from(n);
                }
                *by_worker.entry(counts.worker).or_insert(0) += 1;
            }
            Err(err) => {
                failures += 1;
                bar.println(format!("chunk {} failed: {err}", item.index));
            }
        }
        let p = batch.progress();
        let rate = p.finished() as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(p.finished() as u64);
        bar.set_message(format!(
            "done {} failed {} ({rate:.0} chunks/s)",
            p.done, p.failed
        ));
    }
    bar.finish();
    let p = batch.progress();
    println!(
        "batch ended: {:?}, {} done, {} failed of {}",
        batch.end(),
        p.done,
        p.failed,
        p.total
    );
    let mut workers_seen: Vec<_> = by_worker.into_iter().collect();
    workers_seen.sort();
    for (worker, n) in &workers_seen {
        println!("  {worker}: {n} chunks");
    }
    let mut top: Vec<_> = totals.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (word, n) in top.iter().take(3) {
        println!("  {word}: {n}");
    }
    let words: u64 = totals.values().sum();
    let expected = u64::from(args.chunks) * 50;
    println!("words counted: {words} of {expected}");
    for w in workers {
        w.shutdown().await;
    }
    if words != expected || failures > 0 {
        std::process::exit(1);
    }
    println!("done");
}
