//! Processing one delivery: decode, skip if done, run the handler with heartbeats, then ack,
//! retry or dead-letter.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::carrier::{Carrier, Delivery};
use super::error::CarrierError;
use super::stats::Counters;
use super::task::{DeadLetter, DeadLetterReason, TaskEnvelope, TaskResult, backoff_delay};
use super::worker::{CarrierRef, Handler, HandlerFailure, TaskContext};
use crate::trace::TraceContext;
use crate::{Error, ErrorCode};

/// What every task of a worker shares.
pub(crate) struct Shared {
    pub(crate) carrier: Arc<dyn Carrier>,
    pub(crate) queue: Arc<str>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) handlers: HashMap<String, Handler>,
    pub(crate) counters: Counters,
    pub(crate) hand_back: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Handles one delivery to its end. Carrier failures are logged: the task then comes back
/// after the visibility timeout, which is the at-least-once fallback.
pub(crate) async fn process(shared: &Shared, delivery: Delivery) {
    // Heartbeats cover the broker round trips too, not only the handler: a result write that
    // waits out a leader election must not let the delivery time out and burn an attempt.
    // Pinned here and lent: moved into `keep_alive` instead, it would be stored twice there
    // (as the argument and as the pinned local), doubling every spawned task.
    let work = std::pin::pin!(try_process(shared, &delivery));
    let done = keep_alive(shared, &delivery, shared.heartbeat, work).await;
    if let Err(err) = done {
        tracing::warn!(queue = %shared.queue, message_id = %delivery.message_id, error = %err,
            "durable task left for redelivery");
    }
}

async fn try_process(shared: &Shared, delivery: &Delivery) -> Result<(), CarrierError> {
    let carrier = &shared.carrier;
    let queue = &*shared.queue;
    let envelope = match TaskEnvelope::decode(delivery.body.clone()) {
        Ok(env) if !env.task_id.is_empty() => Ok(env),
        Ok(_) => Err("task envelope without a task ID".to_owned()),
        Err(cause) => Err(format!("undecodable task: {cause}")),
    };
    let envelope = match envelope {
        Ok(env) => env,
        Err(why) => {
            let err = Error::new(ErrorCode::MalformedRequest, why);
            return dead_letter_raw(shared, delivery, DeadLetterReason::UndecodableTask, &err)
                .await;
        }
    };
    // At-least-once delivery, at-most-once run where the carrier allows: a task whose
    // outcome is stored has already run to its end. The first delivery of a task without an
    // idempotency key cannot have one (its ID is fresh; a replay deletes the result first),
    // so that read, a broker round trip on every call's path, is skipped.
    let may_have_run = delivery.attempt > 1 || !envelope.idempotency_key.is_empty();
    let stored = if may_have_run {
        patiently(shared, || carrier.get_result(queue, &envelope.task_id)).await?
    } else {
        None
    };
    if let Some(stored) = stored {
        Counters::bump(&shared.counters.skipped_done);
        // The worker that stored a dead-lettered outcome may have died before writing the
        // letter: write it now (carriers make that idempotent per delivered message).
        if let Ok(result) = TaskResult::decode(stored)
            && result.dead_lettered
            // Only for the message that stored it: another message of the same task (the
            // broker stored the task twice, as a JetStream restart can when a retried enqueue's
            // dedup entry went with the removed first message) would add a second letter.
            && (result.message_id.is_empty() || result.message_id == delivery.message_id)
        {
            let err = Error::new(
                ErrorCode::from_wire(&result.error_code),
                result.error_message.clone(),
            );
            let reason = DeadLetterReason::parse(&result.dead_letter_reason);
            return write_letter(shared, delivery, &envelope, reason, &err, result.attempts).await;
        }
        return carrier.ack(queue, delivery).await;
    }
    if delivery.attempt > 1 {
        Counters::bump(&shared.counters.redeliveries);
    }
    let options = envelope.options();
    let deadline = (envelope.deadline != 0)
        .then(|| UNIX_EPOCH + Duration::from_nanos(envelope.deadline.max(0) as u64));
    if deadline.is_some_and(|d| d <= SystemTime::now()) {
        let err = Error::new(
            ErrorCode::DeadlineExceeded,
            "task deadline passed before it ran",
        );
        return finish_failed(
            shared,
            delivery,
            &envelope,
            DeadLetterReason::DeadlineExceeded,
            &err,
        )
        .await;
    }
    if delivery.attempt > options.max_attempts {
        // Earlier deliveries ended without a verdict: their workers died or lost the task.
        let err = Error::new(
            ErrorCode::Aborted,
            format!(
                "{} deliveries without an outcome (workers lost the task)",
                delivery.attempt - 1
            ),
        );
        return finish_failed(
            shared,
            delivery,
            &envelope,
            DeadLetterReason::AttemptsExhausted,
            &err,
        )
        .await;
    }
    let Some(handler) = shared.handlers.get(&envelope.method).cloned() else {
        let err = Error::unimplemented(&envelope.method);
        return finish_failed(
            shared,
            delivery,
            &envelope,
            DeadLetterReason::UnknownMethod,
            &err,
        )
        .await;
    };

    let metadata: crate::Metadata = envelope
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let trace = TraceContext::from_metadata(&metadata)
        .map(|t| t.child())
        .unwrap_or_else(TraceContext::new_root);
    let span = tracing::info_span!("durable.task", queue, method = %envelope.method,
        task_id = %envelope.task_id, attempt = delivery.attempt, trace_id = %trace.trace_id(),
        parent = metadata.get(crate::trace::TRACEPARENT).map(String::as_str).unwrap_or(""));
    let ctx = TaskContext {
        queue: shared.queue.clone(),
        task_id: envelope.task_id.clone(),
        method: envelope.method.clone(),
        attempt: delivery.attempt,
        max_attempts: options.max_attempts,
        deadline,
        metadata,
        carrier: CarrierRef(shared.carrier.clone()),
        result_ttl: options.result_ttl,
    };

    Counters::bump(&shared.counters.started);
    shared
        .counters
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = AssertUnwindSafe(trace.scope(handler(ctx, envelope.payload.clone()))).catch_unwind();
    let mut superseded = false;
    let outcome = tokio::select! {
        out = unless_superseded(shared, &envelope.task_id, run).instrument(span) => {
            superseded = out.is_none();
            out
        }
        _ = shared.hand_back.cancelled() => None,
        _ = until(deadline) => Some(Ok(Err(HandlerFailure::Failed(
            Error::new(ErrorCode::DeadlineExceeded, "task deadline passed while it ran"))))),
    };
    shared
        .counters
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);

    if superseded {
        // The task's result was stored while it ran (its batch was cancelled, or another
        // delivery finished first): the handler was dropped, nothing is left to do.
        Counters::bump(&shared.counters.skipped_done);
        return carrier.ack(queue, delivery).await;
    }
    let failure = match outcome {
        None => {
            Counters::bump(&shared.counters.handed_back);
            return carrier.release(queue, delivery).await;
        }
        Some(Ok(Ok(response))) => {
            let result = TaskResult {
                task_id: envelope.task_id.clone(),
                response: Some(response),
                attempts: delivery.attempt,
                finished_at: crate::time::now_unix_nanos(),
                message_id: delivery.message_id.clone(),
                ..Default::default()
            };
            let result: Bytes = result.encode_to_vec().into();
            // Result and ack together (one round trip on carriers that can), retried as one:
            // a repeated result write stores the same bytes, a repeated ack does nothing.
            patiently(shared, || {
                carrier.complete(
                    queue,
                    delivery,
                    &envelope.task_id,
                    result.clone(),
                    options.result_ttl,
                )
            })
            .await?;
            Counters::bump(&shared.counters.succeeded);
            return Ok(());
        }
        Some(Ok(Err(failure))) => failure,
        Some(Err(panic)) => HandlerFailure::Failed(Error::new(
            ErrorCode::Internal,
            format!("handler panicked: {}", panic_message(&panic)),
        )),
    };
    let (reason, err) = match failure {
        HandlerFailure::Undecodable(cause) => (
            DeadLetterReason::UndecodablePayload,
            Error::malformed_request(cause),
        ),
        HandlerFailure::Failed(err) if is_permanent(&err) => {
            (DeadLetterReason::PermanentError, err)
        }
        HandlerFailure::Failed(err)
            if err.code() == ErrorCode::DeadlineExceeded
                && deadline.is_some_and(|d| d <= SystemTime::now()) =>
        {
            (DeadLetterReason::DeadlineExceeded, err)
        }
        HandlerFailure::Failed(err) if delivery.attempt < options.max_attempts => {
            let delay = backoff_delay(
                delivery.attempt,
                options.backoff_initial,
                options.backoff_max,
            );
            tracing::debug!(queue, task_id = %envelope.task_id, attempt = delivery.attempt,
                error = %err, ?delay, "durable task failed, will retry");
            Counters::bump(&shared.counters.retries);
            return carrier.retry(queue, delivery, delay).await;
        }
        HandlerFailure::Failed(err) => (DeadLetterReason::AttemptsExhausted, err),
    };
    finish_failed(shared, delivery, &envelope, reason, &err).await
}

/// Runs `fut` while sending the delivery's heartbeats (extending its visibility timeout) every
/// `every`, if set.
async fn keep_alive<F: Future>(
    shared: &Shared,
    delivery: &Delivery,
    every: Option<Duration>,
    mut fut: std::pin::Pin<&mut F>,
) -> F::Output {
    let Some(every) = every else {
        return fut.await;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = ticker.tick() => {
                if let Err(err) = shared.carrier.heartbeat(&shared.queue, delivery).await {
                    tracing::debug!(error = %err, "durable heartbeat failed");
                }
            }
        }
    }
}

/// Runs the handler `fut`, looking for the task's result at every heartbeat interval.
///
/// A result stored while the handler runs (a cancelled batch stores `canceled` for its
/// unfinished tasks; a redelivered copy may finish first) means this run is moot, so the
/// handler is dropped (its cancellation) and `None` returned. Without heartbeats a handler
/// runs to its end.
async fn unless_superseded<F: Future>(shared: &Shared, task_id: &str, fut: F) -> Option<F::Output> {
    let Some(every) = shared.heartbeat else {
        return Some(fut.await);
    };
    tokio::pin!(fut);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = ticker.tick() => {
                match shared.carrier.get_result(&shared.queue, task_id).await {
                    Ok(Some(_)) => return None,
                    Ok(None) => {}
                    Err(err) => tracing::debug!(error = %err, "durable result check failed"),
                }
            }
        }
    }
}

/// How long a worker keeps retrying a result read or write that fails while it holds the
/// delivery (a broker restarting, a clustered stream electing its leader).
///
/// Why: giving up at the first error hands the task back, and each such delivery counts
/// against the task's attempts although its handler never failed; a write given up after a
/// successful run also runs the handler again. Past this bound (or at shutdown hand-back) the
/// delivery is left to the visibility timeout, the at-least-once fallback.
pub(crate) const BROKER_PATIENCE: Duration = Duration::from_secs(30);

/// Runs the idempotent carrier operation `op` until it succeeds, retrying failures with a
/// growing pause for up to [`BROKER_PATIENCE`] or until the worker hands its tasks back.
async fn patiently<T, F, Fut>(shared: &Shared, mut op: F) -> Result<T, CarrierError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CarrierError>>,
{
    let give_up = tokio::time::Instant::now() + BROKER_PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let resume = tokio::time::Instant::now() + pause;
        if resume >= give_up || shared.hand_back.is_cancelled() {
            return Err(err);
        }
        tracing::debug!(queue = %shared.queue, error = %err, ?pause,
            "durable carrier operation failed, retrying");
        tokio::select! {
            _ = shared.hand_back.cancelled() => return Err(err),
            _ = tokio::time::sleep_until(resume) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn until(deadline: Option<SystemTime>) {
    match deadline.and_then(|d| d.duration_since(SystemTime::now()).ok()) {
        Some(left) => tokio::time::sleep(left).await,
        None if deadline.is_some() => {}
        None => std::future::pending().await,
    }
}

/// Errors no retry can cure: dead-lettered at once.
fn is_permanent(err: &Error) -> bool {
    matches!(
        err.code(),
        ErrorCode::InvalidArgument
            | ErrorCode::MalformedRequest
            | ErrorCode::Unimplemented
            | ErrorCode::PermissionDenied
            | ErrorCode::Unauthenticated
    )
}

/// Stores the final error as the task's result (so waiters learn it), then dead-letters the
/// task, or with dead-lettering off only acks it.
async fn finish_failed(
    shared: &Shared,
    delivery: &Delivery,
    envelope: &TaskEnvelope,
    reason: DeadLetterReason,
    err: &Error,
) -> Result<(), CarrierError> {
    let options = envelope.options();
    let result = TaskResult {
        task_id: envelope.task_id.clone(),
        response: None,
        error_code: err.wire_code().to_owned(),
        error_message: err.message().to_owned(),
        attempts: delivery.attempt,
        finished_at: crate::time::now_unix_nanos(),
        dead_lettered: options.dead_letter,
        dead_letter_reason: reason.as_str().to_owned(),
        message_id: delivery.message_id.clone(),
    };
    let carrier = &shared.carrier;
    let result: Bytes = result.encode_to_vec().into();
    patiently(shared, || {
        carrier.put_result(
            &shared.queue,
            &envelope.task_id,
            result.clone(),
            options.result_ttl,
        )
    })
    .await?;
    Counters::bump(&shared.counters.dead_lettered);
    tracing::info!(queue = %shared.queue, task_id = %envelope.task_id, reason = reason.as_str(),
        error = %err, "durable task failed for good");
    if !options.dead_letter {
        return carrier.ack(&shared.queue, delivery).await;
    }
    write_letter(shared, delivery, envelope, reason, err, delivery.attempt).await
}

/// Writes the dead letter of a task and removes the task.
async fn write_letter(
    shared: &Shared,
    delivery: &Delivery,
    envelope: &TaskEnvelope,
    reason: DeadLetterReason,
    err: &Error,
    attempts: u32,
) -> Result<(), CarrierError> {
    let letter = DeadLetter {
        task_id: envelope.task_id.clone(),
        method: envelope.method.clone(),
        task: delivery.body.clone(),
        reason: reason.as_str().to_owned(),
        error_code: err.wire_code().to_owned(),
        error_message: err.message().to_owned(),
        attempts,
        dead_at: crate::time::now_unix_nanos(),
        message_id: delivery.message_id.clone(),
    };
    shared
        .carrier
        .dead_letter(&shared.queue, delivery, letter.encode_to_vec().into())
        .await
}

/// Dead-letters a delivery that is not a task at all.
async fn dead_letter_raw(
    shared: &Shared,
    delivery: &Delivery,
    reason: DeadLetterReason,
    err: &Error,
) -> Result<(), CarrierError> {
    Counters::bump(&shared.counters.dead_lettered);
    tracing::warn!(queue = %shared.queue, message_id = %delivery.message_id, error = %err,
        "undecodable durable task dead-lettered");
    let letter = DeadLetter {
        task: delivery.body.clone(),
        reason: reason.as_str().to_owned(),
        error_code: err.wire_code().to_owned(),
        error_message: err.message().to_owned(),
        attempts: delivery.attempt,
        dead_at: crate::time::now_unix_nanos(),
        message_id: delivery.message_id.clone(),
        ..Default::default()
    };
    shared
        .carrier
        .dead_letter(&shared.queue, delivery, Bytes::from(letter.encode_to_vec()))
        .await
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}
