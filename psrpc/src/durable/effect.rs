//! Effect fences: side effects applied once per task, even when a task runs twice (the design is on [`Effect`]).

use bytes::Bytes;

use super::error::DurableError;
use super::worker::TaskContext;

/// What [`TaskContext::record_effect`] found.
///
/// Delivery is at least once: a worker killed after its handler's side effect but before the
/// task's result is stored leaves the task to be redelivered, and the next attempt runs the
/// handler again. The result check stops every rerun after the result is stored, but not this
/// one. What closes the gap depends on where the effect lives:
///
/// - **On the carrier's broker** (a ledger entry, a counter, a record other services read):
///   make the effect *a record keyed by the task*, written with
///   [`TaskContext::record_effect`]. The carrier writes it with an atomic create-if-absent
///   (JetStream KV create, Redis `SET NX`), so of all the attempts of a task exactly one records
///   it, and a later one is told [`Effect::AlreadyApplied`] with the first value. The effect and
///   its fence are one write: there is no moment where one exists without the other. Readers
///   find it with [`DurableClient::effect`](super::DurableClient::effect).
/// - **Elsewhere** (a payment provider, an email service, another database): pass
///   [`TaskContext::idempotency_key`] (the task ID and the effect's name) to that system's own
///   idempotency mechanism (an `Idempotency-Key` header, a unique constraint, an upsert).
///   Writing a fence record on the carrier *before* or *after* an external effect cannot make
///   it exactly-once: a crash between the two either loses the effect or repeats it.
///
/// Effect records live as long as the task's result (its result TTL) and survive a replay from
/// the dead-letter queue: a replayed task does not re-apply an effect an earlier run recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// This attempt recorded the effect: it is applied now, by this call.
    Applied,
    /// An earlier attempt of the task recorded it (with this value): it must not be applied
    /// again.
    AlreadyApplied(Bytes),
}

impl Effect {
    /// True for [`Effect::Applied`].
    pub fn is_applied(&self) -> bool {
        matches!(self, Effect::Applied)
    }
}

/// The longest effect name.
const MAX_NAME: usize = 64;

/// Effect names are `[A-Za-z0-9_-]{1,64}`, valid in every carrier's keys as they are.
pub(crate) fn check_effect_name(name: &str) -> Result<(), DurableError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(DurableError::InvalidArgument(format!(
            "effect name {name:?} is not 1 to {MAX_NAME} of [A-Za-z0-9_-]"
        )));
    }
    Ok(())
}

impl TaskContext {
    /// Applies the side effect `name` of this task by recording `value` on the carrier, unless
    /// an earlier attempt of the task recorded it (see [`Effect`]).
    ///
    /// Returns [`Effect::Applied`] when this call recorded it, or [`Effect::AlreadyApplied`]
    /// with the first attempt's value, which the handler can use to answer as that attempt
    /// did. A task may record several effects under different names. A value that names the
    /// attempt (or the worker) lets an attempt that retries this call after a lost reply
    /// recognise its own record in `AlreadyApplied`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use psrpc::durable::{Carrier, DurableClient, EnqueueOptions, LocalCarrier, Worker};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let carrier: Arc<dyn Carrier> = Arc::new(LocalCarrier::new());
    /// let worker = Worker::new(carrier.clone(), "Bank")
    ///     .handle("Credit", |ctx, cents: u64| async move {
    ///         // The credit *is* the ledger record: a rerun of the task cannot add a second.
    ///         let effect = ctx.record_effect("credit", cents.to_string()).await?;
    ///         Ok(effect.is_applied())
    ///     })
    ///     .start()
    ///     .await
    ///     .unwrap();
    /// let client = DurableClient::new(carrier, "Bank").await.unwrap();
    /// let task = client
    ///     .enqueue::<_, bool>("Credit", &250u64, EnqueueOptions::default())
    ///     .await
    ///     .unwrap();
    /// assert!(task.wait(Duration::from_secs(5)).await.unwrap());
    /// let ledger = client.effect(task.id(), "credit").await.unwrap();
    /// assert_eq!(ledger.as_deref(), Some(&b"250"[..]));
    /// worker.shutdown().await;
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`DurableError::InvalidArgument`] for a name outside `[A-Za-z0-9_-]{1,64}`; a carrier
    /// error (the effect is then not applied, and the task is retried like any failure when
    /// the handler returns it), including from carriers that keep no effect records. A
    /// `DurableError` converts into the handler's error with `?`.
    ///
    /// # Cancel safety
    /// If dropped, the record may or may not have been written; either way a later call (in
    /// this attempt or the next) learns which.
    pub async fn record_effect(
        &self,
        name: &str,
        value: impl Into<Bytes>,
    ) -> Result<Effect, DurableError> {
        check_effect_name(name)?;
        let found = self
            .carrier
            .0
            .record_effect(
                &self.queue,
                &self.task_id,
                name,
                value.into(),
                self.result_ttl,
            )
            .await?;
        Ok(match found {
            None => Effect::Applied,
            Some(first) => Effect::AlreadyApplied(first),
        })
    }

    /// The key an external system should deduplicate effect `name` of this task by: the same
    /// in every attempt of the task, different for every task (`<task ID>:<name>`).
    pub fn idempotency_key(&self, name: &str) -> String {
        format!("{}:{name}", self.task_id)
    }
}
