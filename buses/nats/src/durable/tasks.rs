//! Tasks on the work-queue stream: enqueue (a publish awaiting its ack), fetch from the
//! durable pull consumer, and the replies to a delivery (ack, `Nak` with a delay, `+WPI`
//! heartbeats).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
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
        let consumer = self.consumer(&q).await?;
        let err = fail("fetch");
        let mut out = Vec::new();
        // What is there now, without waiting.
        let now = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| err(e.to_string()))?;
        drain(now, NO_WAIT_BOUND, &mut out).await?;
        if !out.is_empty() || wait.is_zero() {
            return Ok(out);
        }
        // Nothing: wait for one (a pull of one completes as soon as one arrives), then take
        // whatever else is ready.
        let wait = wait.max(Duration::from_millis(10));
        let one = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| err(e.to_string()))?;
        drain(one, wait.saturating_add(NO_WAIT_BOUND), &mut out).await?;
        if !out.is_empty() && max > 1 {
            let more = consumer
                .fetch()
                .max_messages(max - 1)
                .messages()
                .await
                .map_err(|e| err(e.to_string()))?;
            drain(more, NO_WAIT_BOUND, &mut out).await?;
        }
        Ok(out)
    }
}

/// How long a pull may go unanswered past its own expiry before it is given up.
///
/// Why: a pull ends when the server says so (`404`/`408` status); should that status never
/// come, the client library waits 5 s past `expires`, or forever for a no-wait fetch, and the
/// worker would stall. Messages the server sends after we stop reading are redelivered after
/// the visibility timeout, so giving up loses nothing.
const NO_WAIT_BOUND: Duration = Duration::from_secs(1);

/// Takes the deliveries of one pull into `out` until it ends or `bound` passes; what was taken
/// before the bound stays in `out`.
async fn drain(
    mut pull: async_nats::jetstream::consumer::pull::Batch,
    bound: Duration,
    out: &mut Vec<Delivery>,
) -> Result<(), CarrierError> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, pull.next()).await {
            Ok(Some(msg)) => {
                out.push(to_delivery(msg.map_err(|e| fail("fetch")(e.to_string()))?));
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                tracing::debug!("a JetStream pull went unanswered; given up");
                return Ok(());
            }
        }
    }
}

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
