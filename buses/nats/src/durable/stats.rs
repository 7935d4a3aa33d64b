//! Queue statistics: depth and in-flight count from the consumer, dead letters from their
//! stream, the oldest waiting task's age from its stored time.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer;
use psrpc::durable::{CarrierError, QueueStats};

use super::carrier::{CONSUMER, JetStreamCarrier, fail};

impl JetStreamCarrier {
    pub(super) async fn queue_stats(&self, queue: &str) -> Result<QueueStats, CarrierError> {
        let q = self.opened(queue).await?;
        let err = fail("stats");
        let mut tasks = q.tasks.clone();
        let task_state = tasks
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .clone();
        let mut dead = q.dead.clone();
        let dead_count = dead
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .messages;
        let (waiting, in_flight, next_seq) = match q
            .tasks
            .get_consumer::<consumer::pull::Config>(CONSUMER)
            .await
        {
            Ok(mut c) => {
                let info = c.info().await.map_err(|e| err(e.to_string()))?;
                (
                    info.num_pending,
                    info.num_ack_pending as u64,
                    info.delivered.stream_sequence + 1,
                )
            }
            // No worker has fetched yet: everything stored is waiting.
            Err(_) => (task_state.messages, 0, task_state.first_sequence),
        };
        let oldest_waiting_age = if waiting > 0 {
            let seq = next_seq.max(task_state.first_sequence);
            match q.tasks.get_raw_message(seq).await {
                Ok(msg) => SystemTime::now()
                    .duration_since(
                        SystemTime::UNIX_EPOCH
                            + Duration::from_nanos(msg.time.unix_timestamp_nanos().max(0) as u64),
                    )
                    .ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(QueueStats {
            waiting,
            in_flight,
            dead_letters: dead_count,
            oldest_waiting_age,
        })
    }
}
