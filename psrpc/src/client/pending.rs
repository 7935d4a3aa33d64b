//! A call waiting for its replies.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Inner;
use super::reply::Reply;
use crate::wire::{self, ClaimResponse};
use crate::{Channel, MethodInfo};

/// A call registered for replies; unregisters on drop, and tells the servers when the caller
/// gave up before the end (dropped the future or the stream).
pub(crate) struct PendingCall {
    inner: Arc<Inner>,
    pub(super) request_id: String,
    pub(super) rx: mpsc::UnboundedReceiver<Reply>,
    /// Where a cancellation goes; the channel itself is only built if one is sent.
    pub(super) method: &'static str,
    pub(super) topics: Vec<String>,
    /// Set while a published request awaits its outcome.
    pub(super) armed: bool,
}

impl PendingCall {
    pub(super) fn new(
        inner: Arc<Inner>,
        request_id: String,
        method: MethodInfo,
        topics: &[&str],
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        inner.pending.insert(request_id.clone(), tx);
        PendingCall {
            inner,
            request_id,
            rx,
            method: method.name(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            armed: false,
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.inner.pending.remove(&self.request_id);
        if !self.armed || self.inner.closed.is_cancelled() {
            return;
        }
        // The caller dropped a call in flight: tell the servers, so a handler can stop.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cancel = ClaimResponse {
            request_id: std::mem::take(&mut self.request_id),
            server_id: String::new(),
            x_cancel: true,
        };
        let bus = self.inner.bus.clone();
        let channel = Channel::claim_response(
            self.inner.service.clone(),
            self.method,
            std::mem::take(&mut self.topics),
        );
        runtime.spawn(async move {
            let payload = wire::encode_envelope(wire::CLAIM_RESPONSE_TYPE_URL, &cancel);
            if let Err(err) = bus.publish(&channel, payload).await {
                tracing::debug!(%err, "failed to publish a cancellation");
            }
        });
    }
}
