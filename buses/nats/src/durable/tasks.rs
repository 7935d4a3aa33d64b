//! Tasks on the work-queue stream: enqueue (a publish awaiting its ack), fetch from the
//! durable pull consumer, and the replies to a delivery (ack, `Nak` with a delay, `+WPI`
//! heartbeats).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use psrpc::durable::{CarrierError, Delivery, Enqueued, NewTask, Receipt};

use super::carrier::{JetStreamCarrier, fail};

impl JetStreamCarrier {
    pub(super) async fn enqueue_task(
        &self,
        queue: &str,
        task: NewTask,
    ) -> Result<Enqueued, CarrierError> {
        self.opened(queue).await?;
        let err = fail("enqueue");
        let mut headers = HeaderMap::new();
        if task.dedup {
            headers.insert("Nats-Msg-Id", task.task_id.as_str());
        }
        let ack = self
            .inner
            .js
            .publish_with_headers(Self::task_subject(queue), headers, task.body)
            .await
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Enqueued {
            task_id: task.task_id,
            duplicate: ack.duplicate,
        })
    }

    pub(super) async fn fetch_tasks(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, CarrierError> {
        let q = self.opened(queue).await?;
        let err = fail("fetch");
        // One continuous pull per queue and carrier, as raw JetStream consumers run: the
        // client keeps a pull request open and renews it as messages arrive, so a fetch under
        // load takes what has already arrived instead of paying a pull round trip. Requests
        // are only renewed while fetching, so a worker whose permits are all busy stops
        // asking for work once its open request expires.
        let mut pull = q.pull.lock().await;
        let stream = match &mut *pull {
            Some(stream) => stream,
            // Boxed, as the cold path: its consumer and pull requests would otherwise make
            // every fetch's future several KiB larger.
            None => pull.insert(Box::pin(self.start_pull(&q, max)).await?),
        };
        let mut out = Vec::new();
        let first = tokio::time::timeout(wait.max(Duration::from_millis(1)), stream.next()).await;
        match first {
            Err(_) => return Ok(out),
            Ok(Some(Ok(msg))) => out.push(to_delivery(msg)),
            Ok(Some(Err(e))) => {
                // Made again by the next fetch (a broker restart, a deleted consumer).
                *pull = None;
                return Err(err(e.to_string()));
            }
            Ok(None) => {
                *pull = None;
                return Ok(out);
            }
        }
        // Whatever else has arrived, without waiting.
        while out.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(msg))) => out.push(to_delivery(msg)),
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "JetStream pull ended; made again by the next fetch");
                    *pull = None;
                    break;
                }
                Some(None) => {
                    *pull = None;
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Makes the queue's durable consumer if this carrier has not yet, and opens its
    /// continuous pull.
    async fn start_pull(
        &self,
        q: &super::carrier::Opened,
        max: usize,
    ) -> Result<jetstream::consumer::pull::Stream, CarrierError> {
        self.consumer(q)
            .await?
            .stream()
            .max_messages_per_batch(max.clamp(1, MAX_BATCH))
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| fail("fetch")(e.to_string()))
    }

    /// Ends the queue's continuous pull: messages it already received go back for immediate
    /// redelivery, and the request it had open dies with its subscription.
    pub(super) async fn end_pull(&self, queue: &str) -> Result<(), CarrierError> {
        let Some(q) = self.inner.queues.get(queue).map(|q| q.clone()) else {
            return Ok(());
        };
        let Some(mut stream) = q.pull.lock().await.take() else {
            return Ok(());
        };
        while let Some(Some(Ok(msg))) = stream.next().now_or_never() {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
        }
        Ok(())
    }
}

/// The most messages one pull asks for (the first fetch's `max`, capped).
const MAX_BATCH: usize = 256;

/// How long a pull request stays open at the server: a worker that stops fetching (all its
/// permits busy, or stopped) has messages routed to it for at most this long.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

pub(super) fn message(delivery: &Delivery) -> Result<&jetstream::Message, CarrierError> {
    delivery
        .receipt
        .get::<jetstream::Message>()
        .ok_or_else(|| CarrierError::new("receipt", "not a delivery of the JetStream carrier"))
}

fn to_delivery(msg: jetstream::Message) -> Delivery {
    let (seq, attempt) = msg
        .info()
        .map(|i| {
            (
                i.stream_sequence,
                u32::try_from(i.delivered).unwrap_or(u32::MAX),
            )
        })
        .unwrap_or((0, 1));
    Delivery {
        message_id: seq.to_string(),
        body: msg.message.payload.clone(),
        attempt: attempt.max(1),
        receipt: Receipt::new(msg),
    }
}

async fn reply(delivery: &Delivery, kind: AckKind, op: &'static str) -> Result<(), CarrierError> {
    message(delivery)?
        .ack_with(kind)
        .await
        .map_err(|e| CarrierError::new(op, e.to_string()))
}

pub(super) async fn ack(delivery: &Delivery) -> Result<(), CarrierError> {
    // A plain ack, not a confirmed one (`double_ack`, a round trip per task): workers store
    // the result before they ack, so an ack lost in a broker crash costs one redelivery,
    // which the worker's result check skips without running the handler again.
    message(delivery)?
        .ack()
        .await
        .map_err(|e| CarrierError::new("ack", e.to_string()))
}

pub(super) async fn retry(delivery: &Delivery, delay: Duration) -> Result<(), CarrierError> {
    reply(delivery, AckKind::Nak(Some(delay)), "retry").await
}

pub(super) async fn release(delivery: &Delivery) -> Result<(), CarrierError> {
    reply(delivery, AckKind::Nak(None), "release").await
}

pub(super) async fn heartbeat(delivery: &Delivery) -> Result<(), CarrierError> {
    reply(delivery, AckKind::Progress, "heartbeat").await
}
