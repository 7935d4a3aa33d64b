//! Broker restarts: accepted tasks and stored results survive a SIGKILL of the broker.

use std::future::Future;
use std::sync::Arc;

use psrpc::durable::{Carrier, DurableClient, EnqueueOptions, Worker};

use super::*;
use crate::{PATIENCE, within};

/// Tasks accepted and results stored before the broker is SIGKILLed are there after it
/// restarts: queued tasks complete, the stored result is still fetched by ID.
pub async fn survives_broker_kill<C, Fut>(connect: C, kill_and_restart: impl FnOnce())
where
    C: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Carrier>>,
{
    let before = DurableClient::with_config(connect().await, QUEUE, &queue_config(VIS))
        .await
        .expect("open");
    let start_worker = |carrier: Arc<dyn Carrier>| {
        Worker::new(carrier, QUEUE)
            .options(worker_options(VIS))
            .handle(
                "Echo",
                |_ctx, s: String| async move { Ok(format!("echo {s}")) },
            )
            .start()
    };
    let worker = start_worker(connect().await).await.expect("worker");
    let done = before
        .call::<_, String>(
            "Echo",
            &"first".to_string(),
            EnqueueOptions::default(),
            PATIENCE,
        )
        .await
        .expect("first call");
    assert_eq!(done, "echo first");
    let first_id = before
        .enqueue::<_, String>("Echo", &"probe".to_string(), EnqueueOptions::default())
        .await
        .expect("enqueue")
        .id()
        .to_owned();
    within(
        "probe",
        before.handle::<String>(first_id.clone()).wait(PATIENCE),
    )
    .await
    .expect("probe result");
    worker.shutdown().await;
    let mut queued = Vec::new();
    for i in 0..20 {
        let task = before
            .enqueue::<_, String>("Echo", &i.to_string(), EnqueueOptions::default())
            .await
            .expect("enqueue");
        queued.push(task.id().to_owned());
    }
    kill_and_restart();
    let after = DurableClient::with_config(connect().await, QUEUE, &queue_config(VIS))
        .await
        .expect("reopen");
    let worker = start_worker(connect().await)
        .await
        .expect("worker after restart");
    for (i, id) in queued.into_iter().enumerate() {
        let out = after
            .handle::<String>(id)
            .wait(PATIENCE)
            .await
            .expect("queued task");
        assert_eq!(out, format!("echo {i}"));
    }
    let stored = after.result(&first_id).await.expect("fetch").expect("kept");
    assert!(stored.response.is_some());
    worker.shutdown().await;
}
