//! Dead letters: the stream `psrpc:dlq:{q}`, a letter's ID its entry ID. Writing one is the
//! `DEAD_LETTER` script (letter and removal of the task in one step).

use bytes::Bytes;
use psrpc::durable::{CarrierError, StoredDeadLetter};
use redis::streams::StreamRangeReply;

use super::{RedisStreamsCarrier, fail, field_bytes, keys};

/// A malformed entry ID names no letter: Redis answers it with a response error.
fn is_bad_id(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
}

impl RedisStreamsCarrier {
    pub(super) async fn list_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, CarrierError> {
        let dead = keys(queue).dead;
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut conn = self.inner.conn.clone();
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&dead)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(fail("list_dead_letters"))?;
        Ok(range
            .ids
            .iter()
            .map(|e| StoredDeadLetter {
                id: e.id.clone(),
                body: field_bytes(e, "letter"),
            })
            .collect())
    }

    pub(super) async fn read_letter(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let dead = keys(queue).dead;
        let mut conn = self.inner.conn.clone();
        let range: redis::RedisResult<StreamRangeReply> = redis::cmd("XRANGE")
            .arg(&dead)
            .arg(id)
            .arg(id)
            .query_async(&mut conn)
            .await;
        match range {
            Ok(r) => Ok(r.ids.first().map(|e| field_bytes(e, "letter"))),
            Err(e) if is_bad_id(&e) => Ok(None),
            Err(e) => Err(CarrierError::from_source("get_dead_letter", e)),
        }
    }

    pub(super) async fn remove_letter(&self, queue: &str, id: &str) -> Result<bool, CarrierError> {
        let dead = keys(queue).dead;
        let mut conn = self.inner.conn.clone();
        let n: redis::RedisResult<i64> = redis::cmd("XDEL")
            .arg(&dead)
            .arg(id)
            .query_async(&mut conn)
            .await;
        match n {
            Ok(n) => Ok(n > 0),
            Err(e) if is_bad_id(&e) => Ok(false),
            Err(e) => Err(CarrierError::from_source("delete_dead_letter", e)),
        }
    }

    pub(super) async fn purge_letters(&self, queue: &str) -> Result<u64, CarrierError> {
        let dead = keys(queue).dead;
        let mut conn = self.inner.conn.clone();
        let (n,): (u64,) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(&dead)
            .cmd("DEL")
            .arg(&dead)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(fail("purge_dead_letters"))?;
        Ok(n)
    }
}
