//! Replies to this client: its reply subscriptions are read by one task each, and every
//! payload is routed to the call or stream waiting for it, by request or stream ID.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use prost::Message;

use super::Inner;
use crate::bus::Subscription;
use crate::wire::{self, ClaimRequest, Response};
use crate::{Error, Result};

/// A reply routed to a waiting call.
pub(crate) enum Reply {
    // Boxed: the per-call channel allocates its slots up front, so slots stay pointer-sized.
    Claim(Box<ClaimRequest>),
    Response(Box<Response>),
}

pub(super) fn response_error(resp: Response) -> Error {
    Error::from_wire(resp.error, &resp.code, resp.error_details)
}

pub(super) fn raw_response(resp: Response) -> Result<Bytes> {
    if !resp.error.is_empty() {
        return Err(response_error(resp));
    }
    Ok(resp.raw_response)
}

pub(super) async fn reply_loop(inner: Arc<Inner>, mut sub: Subscription) {
    // Built once: re-creating it per message would re-register with the token every time.
    let closed = inner.closed.cancelled();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            payload = sub.recv() => match payload {
                Some(payload) => inner.route(payload),
                None => break,
            },
        }
    }
}

impl Inner {
    /// Routes a payload from a reply channel to the call or stream waiting for it.
    fn route(&self, payload: Bytes) {
        // Whatever does not decode is counted, the envelope and the inner message alike:
        // garbage from the wire is never dropped silently.
        let Ok(msg) = wire::decode_envelope(payload) else {
            self.count_malformed();
            return;
        };
        let reply = match msg.type_url.as_str() {
            wire::RESPONSE_TYPE_URL => {
                Response::decode(msg.value).map(|r| Reply::Response(Box::new(r)))
            }
            wire::CLAIM_REQUEST_TYPE_URL => {
                ClaimRequest::decode(msg.value).map(|c| Reply::Claim(Box::new(c)))
            }
            wire::STREAM_TYPE_URL => match wire::StreamFrame::decode(msg.value) {
                Ok(frame) => return self.route_frame(frame),
                Err(err) => Err(err),
            },
            _ => {
                self.count_malformed();
                return;
            }
        };
        let Ok(reply) = reply else {
            self.count_malformed();
            return;
        };
        let request_id = match &reply {
            Reply::Claim(c) => &c.request_id,
            Reply::Response(r) => &r.request_id,
        };
        let delivered = self
            .pending
            .get(request_id)
            .is_some_and(|tx| tx.send(reply).is_ok());
        if !delivered {
            self.unroutable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %self.id, "dropped a reply for a call no longer waiting");
        }
    }

    fn route_frame(&self, frame: wire::StreamFrame) {
        // Clone out of the map so no shard lock is held while the frame is handled.
        match self.streams.get(&frame.stream_id).map(|core| core.clone()) {
            Some(core) => core.on_frame(frame),
            None => {
                self.unroutable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = %self.id, "dropped a malformed reply");
    }
}
