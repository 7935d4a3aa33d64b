//! Durable calls: a worker crashes in the middle of a render job, and the job still completes.
//!
//! The job is enqueued through the client generated from `proto/jobs.proto` (the method is
//! marked with `option (psrpc.durable)`). `worker-a` takes it and dies mid-task: its runtime is
//! torn down, so nothing is acked, released or heartbeaten, as when a process is killed. After
//! the visibility timeout (2 s, declared in the proto) the job is delivered again, `worker-b`
//! finishes it, and the caller's wait returns the result; a fresh client fetches it again by
//! task ID.
//!
//! ```sh
//! cargo run -p psrpc-examples --bin durable-jobs                                  # in-process
//! cargo run -p psrpc-examples --bin durable-jobs -- --bus nats://127.0.0.1:4222   # nats-server -js
//! cargo run -p psrpc-examples --bin durable-jobs -- --bus redis://127.0.0.1:6379
//! ```
//!
//! With `--role server` a process runs a worker until Ctrl-C, and with `--role client` another
//! enqueues a job and waits for its result (the crash is a step of the one-process run).

use std::sync::Arc;
use std::time::Duration;

use psrpc::durable::{Carrier, TaskContext};
use psrpc_examples::Role;
use psrpc_examples::jobs::{
    RenderDone, RenderJob, RendererDurableClient, RendererDurableWorker, renderer_durable_worker,
};

/// A worker that renders.
struct Farm {
    name: &'static str,
}

impl RendererDurableWorker for Farm {
    async fn render(&self, ctx: TaskContext, job: RenderJob) -> psrpc::Result<RenderDone> {
        println!(
            "{}: rendering {} (attempt {})",
            self.name, job.file, ctx.attempt
        );
        Ok(RenderDone {
            summary: format!(
                "rendered {} on attempt {} by {}",
                job.file, ctx.attempt, self.name
            ),
        })
    }
}

/// A worker that dies in the middle of every job.
struct Doomed {
    started: std::sync::mpsc::Sender<()>,
}

impl RendererDurableWorker for Doomed {
    async fn render(&self, ctx: TaskContext, job: RenderJob) -> psrpc::Result<RenderDone> {
        println!("worker-a: rendering {} (attempt {})", job.file, ctx.attempt);
        let _ = self.started.send(());
        std::future::pending().await
    }
}

async fn carrier_or_exit(url: Option<&str>) -> Arc<dyn Carrier> {
    match psrpc_examples::carrier(url).await {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    }
}

const ABOUT: &str = "Durable calls: a worker crashes in the middle of a render job, the job \
is delivered again after its visibility timeout and completes on another worker.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("durable-jobs", ABOUT);
    let url = args.bus.clone();
    match args.role {
        Role::Server => {
            let carrier = carrier_or_exit(url.as_deref()).await;
            let worker = renderer_durable_worker(carrier, Farm { name: "worker-b" })
                .start()
                .await?;
            psrpc_examples::serve_until_stopped("worker-b").await;
            worker.shutdown().await;
            return Ok(());
        }
        Role::Client => {
            let client = RendererDurableClient::new(carrier_or_exit(url.as_deref()).await).await?;
            let job = RenderJob {
                file: "intro.mp4".into(),
            };
            let task = client.enqueue_render(&job).await?;
            println!("enqueued {} as task {}", job.file, task.id());
            let done = task.wait(Duration::from_secs(30)).await?;
            println!("result: {}", done.summary);
            return Ok(());
        }
        Role::Both => {}
    }
    // The in-process carrier is shared by everyone in this process; brokers get a connection
    // per party, as separate processes would have.
    let local = carrier_or_exit(url.as_deref()).await;
    let connect = || {
        let (url, local) = (url.clone(), local.clone());
        async move {
            match url {
                Some(url) => carrier_or_exit(Some(&url)).await,
                None => local,
            }
        }
    };

    let client = RendererDurableClient::new(connect().await).await?;
    let job = RenderJob {
        file: "intro.mp4".into(),
    };
    let task = client.enqueue_render(&job).await?;
    println!("enqueued {} as task {}", job.file, task.id());

    // worker-a runs on a runtime of its own, torn down mid-task: a crash.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let crash_carrier = url.clone().map_or_else(|| Some(local.clone()), |_| None);
    let crash_url = url.clone();
    let doomed = std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let worker = runtime.block_on(async move {
            let carrier = match crash_carrier {
                Some(local) => local,
                None => psrpc_examples::carrier(crash_url.as_deref()).await?,
            };
            renderer_durable_worker(
                carrier,
                Doomed {
                    started: started_tx,
                },
            )
            .start()
            .await
            .map_err(|e| e.to_string())
        })?;
        let _ = crash_rx.recv();
        // No shutdown: the runtime and everything on it vanish, like a killed process.
        std::mem::forget(worker);
        runtime.shutdown_background();
        Ok(())
    });
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(30)))
        .await?
        .map_err(|_| "worker-a never started the job")?;
    let _ = crash_tx.send(());
    doomed.join().map_err(|_| "worker-a panicked")??;
    println!("worker-a: crashed mid-task (no ack, no hand-back)");

    let worker_b = renderer_durable_worker(connect().await, Farm { name: "worker-b" })
        .start()
        .await?;
    let done = task.wait(Duration::from_secs(30)).await?;
    println!("result: {}", done.summary);

    let later = RendererDurableClient::new(connect().await).await?;
    let again = later.render_task(task.id()).try_result().await?;
    println!(
        "fetched later by task ID: {}",
        again.map_or("(expired)".into(), |d| d.summary)
    );
    let stats = worker_b.shutdown().await;
    println!(
        "worker-b: {} redelivered job(s) completed",
        stats.redeliveries
    );
    Ok(())
}
