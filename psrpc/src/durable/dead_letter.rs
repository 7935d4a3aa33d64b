//! The dead-letter queue: list, inspect, replay and purge tasks that failed for good.

use std::sync::Arc;

use prost::Message;

use super::carrier::{Carrier, NewTask};
use super::error::DurableError;
use super::task::{DeadLetter, TaskEnvelope};

/// The dead letters of one queue.
///
/// ```
/// # use std::sync::Arc;
/// # use psrpc::durable::{DeadLetters, LocalCarrier};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dlq = DeadLetters::new(Arc::new(LocalCarrier::new()), "Mailer");
/// for (id, letter) in dlq.list(None, 100).await.unwrap() {
///     println!("{id}: {} failed: {} ({})", letter.task_id, letter.error_message, letter.reason);
/// }
/// # });
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    carrier: Arc<dyn Carrier>,
    queue: Arc<str>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// The dead letters of `queue`.
    pub fn new(carrier: Arc<dyn Carrier>, queue: &str) -> Self {
        DeadLetters {
            carrier,
            queue: queue.into(),
        }
    }

    /// Up to `limit` dead letters after the one with ID `after` (from the start for `None`),
    /// oldest first, with their IDs. A stored letter that does not decode is shown with an
    /// empty task ID and reason `other`, so it can still be deleted.
    ///
    /// # Errors
    /// A carrier error.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DeadLetter)>, DurableError> {
        let stored = self
            .carrier
            .list_dead_letters(&self.queue, after, limit)
            .await?;
        Ok(stored
            .into_iter()
            .map(|s| (s.id, decode_letter(s.body)))
            .collect())
    }

    /// One dead letter by ID.
    ///
    /// # Errors
    /// A carrier error.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetter>, DurableError> {
        Ok(self
            .carrier
            .get_dead_letter(&self.queue, id)
            .await?
            .map(decode_letter))
    }

    /// Enqueues the dead task again under its task ID with a fresh attempt count (its stored
    /// error result is forgotten first), then removes the dead letter; returns the task ID.
    ///
    /// If this is interrupted between the enqueue and the removal, the letter stays and a
    /// second replay would run the task again.
    ///
    /// # Errors
    /// [`DurableError::InvalidArgument`] when there is no such letter or its task does not
    /// decode (an undecodable task cannot be replayed), or a carrier error.
    pub async fn replay(&self, id: &str) -> Result<String, DurableError> {
        let letter = self
            .get(id)
            .await?
            .ok_or_else(|| DurableError::InvalidArgument(format!("no dead letter {id}")))?;
        let envelope = TaskEnvelope::decode(letter.task.clone()).map_err(|e| {
            DurableError::InvalidArgument(format!(
                "dead letter {id} holds an undecodable task: {e}"
            ))
        })?;
        self.carrier
            .delete_result(&self.queue, &envelope.task_id)
            .await?;
        let enqueued = self
            .carrier
            .enqueue(
                &self.queue,
                NewTask {
                    task_id: envelope.task_id,
                    body: letter.task,
                    dedup: false,
                },
            )
            .await?;
        self.carrier.delete_dead_letter(&self.queue, id).await?;
        Ok(enqueued.task_id)
    }

    /// Removes one dead letter; false if there was none.
    ///
    /// # Errors
    /// A carrier error.
    pub async fn delete(&self, id: &str) -> Result<bool, DurableError> {
        Ok(self.carrier.delete_dead_letter(&self.queue, id).await?)
    }

    /// Removes every dead letter; returns how many.
    ///
    /// # Errors
    /// A carrier error.
    pub async fn purge(&self) -> Result<u64, DurableError> {
        Ok(self.carrier.purge_dead_letters(&self.queue).await?)
    }
}

fn decode_letter(body: bytes::Bytes) -> DeadLetter {
    DeadLetter::decode(body.clone()).unwrap_or_else(|e| DeadLetter {
        task: body,
        reason: "other".into(),
        error_message: format!("undecodable dead letter: {e}"),
        ..Default::default()
    })
}
