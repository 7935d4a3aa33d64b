//! Generated durable clients and workers, on the in-process carrier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use psrpc::durable::{Carrier, DeadLetters, DurableError, LocalCarrier, TaskContext};
use psrpc_build_e2e::jobs::{
    RenderRequest, RenderResult, RendererDurableClient, RendererDurableWorker,
    renderer_durable_queue_config, renderer_durable_worker, renderer_methods,
};

struct Farm {
    runs: Arc<AtomicU32>,
}

impl RendererDurableWorker for Farm {
    async fn render(&self, ctx: TaskContext, req: RenderRequest) -> psrpc::Result<RenderResult> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if req.scene == "broken" {
            return Err(psrpc::Error::new(psrpc::ErrorCode::Internal, "gpu on fire"));
        }
        Ok(RenderResult {
            url: format!("{}/{}@{}", req.scene, req.frames, ctx.attempt),
        })
    }

    async fn thumbnail(
        &self,
        _ctx: TaskContext,
        req: RenderRequest,
    ) -> psrpc::Result<RenderResult> {
        Ok(RenderResult {
            url: format!("thumb/{}", req.scene),
        })
    }
}

const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn declared_defaults_reach_the_generated_code() {
    let render = RendererDurableClient::render_options();
    assert_eq!(render.task.max_attempts, 3);
    assert_eq!(render.task.backoff_initial, Duration::from_millis(10));
    assert_eq!(render.task.backoff_max, Duration::from_millis(50));
    assert_eq!(render.task.result_ttl, Duration::from_secs(60));
    let thumb = RendererDurableClient::thumbnail_options();
    assert_eq!(thumb.task, psrpc::durable::TaskOptions::default());
    let config = renderer_durable_queue_config();
    assert_eq!(config.visibility_timeout, Duration::from_secs(5));
    assert_eq!(renderer_methods::SERVICE, "Renderer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_enqueue_await_fetch_and_dead_letter() {
    let carrier: Arc<dyn Carrier> = Arc::new(LocalCarrier::new());
    let runs = Arc::new(AtomicU32::new(0));
    let worker = renderer_durable_worker(carrier.clone(), Farm { runs: runs.clone() })
        .start()
        .await
        .unwrap();
    let client = RendererDurableClient::new(carrier.clone()).await.unwrap();

    let req = RenderRequest {
        scene: "hall".into(),
        frames: 24,
    };
    let task = client.enqueue_render(&req).await.unwrap();
    assert_eq!(task.wait(PATIENCE).await.unwrap().url, "hall/24@1");
    // Later, by ID only.
    let again = client.render_task(task.id().to_owned());
    assert_eq!(again.try_result().await.unwrap().unwrap().url, "hall/24@1");

    let thumb = client.thumbnail(&req, PATIENCE).await.unwrap();
    assert_eq!(thumb.url, "thumb/hall");

    let broken = RenderRequest {
        scene: "broken".into(),
        frames: 1,
    };
    match client.render(&broken, PATIENCE).await {
        Err(DurableError::Task(err)) => assert_eq!(err.message(), "gpu on fire"),
        other => panic!("expected the task's error, got {other:?}"),
    }
    // Three attempts (the declared max), then a dead letter. The result is stored before the
    // letter is written; shutdown waits for the worker to finish with the task.
    assert_eq!(runs.load(Ordering::SeqCst), 1 + 3);
    worker.shutdown().await;
    let letters = DeadLetters::new(carrier, renderer_methods::SERVICE)
        .list(None, 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].1.attempts, 3);
}
