//! Dead letters: the dead-letter stream, a letter's ID its stream sequence.

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use psrpc::durable::{CarrierError, Delivery, StoredDeadLetter};

use super::carrier::{JetStreamCarrier, fail, sanitize};
use super::tasks::message;

impl JetStreamCarrier {
    pub(super) async fn dead_letter_task(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> Result<(), CarrierError> {
        self.opened(queue).await?;
        let err = fail("dead_letter");
        // Persist the letter first: a crash before the Term only redelivers the task, and the
        // worker then writes the letter again, deduplicated by the task message's stream
        // sequence (the same in every redelivery).
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("dl-{}", delivery.message_id).as_str(),
        );
        self.inner
            .js
            .publish_with_headers(format!("psrpc.dlq.{}", sanitize(queue)), headers, letter)
            .await
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        message(delivery)?
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| err(e.to_string()))
    }

    pub(super) async fn list_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, CarrierError> {
        let q = self.opened(queue).await?;
        let err = fail("list_dead_letters");
        let mut dead = q.dead.clone();
        let state = dead
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .clone();
        let from = after
            .and_then(|a| a.parse::<u64>().ok())
            .map_or(state.first_sequence, |a| (a + 1).max(state.first_sequence));
        let mut out = Vec::new();
        let mut seq = from;
        while out.len() < limit && seq <= state.last_sequence && state.messages > 0 {
            // Deleted sequences (removed or replayed letters) are gaps: skip them.
            if let Ok(msg) = q.dead.get_raw_message(seq).await {
                out.push(StoredDeadLetter {
                    id: seq.to_string(),
                    body: msg.payload,
                });
            }
            seq += 1;
        }
        Ok(out)
    }

    pub(super) async fn read_letter(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let q = self.opened(queue).await?;
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(None);
        };
        Ok(q.dead.get_raw_message(seq).await.ok().map(|m| m.payload))
    }

    pub(super) async fn remove_letter(&self, queue: &str, id: &str) -> Result<bool, CarrierError> {
        let q = self.opened(queue).await?;
        let Ok(seq) = id.parse::<u64>() else {
            return Ok(false);
        };
        Ok(q.dead.delete_message(seq).await.unwrap_or(false))
    }

    pub(super) async fn purge_letters(&self, queue: &str) -> Result<u64, CarrierError> {
        let q = self.opened(queue).await?;
        let purged = q
            .dead
            .purge()
            .await
            .map_err(|e| CarrierError::new("purge_dead_letters", e.to_string()))?;
        Ok(purged.purged)
    }
}
