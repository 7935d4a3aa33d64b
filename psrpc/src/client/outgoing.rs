//! What a call sends: its request with metadata and trace context, after the interceptors saw
//! it, bounded by its deadline.

use bytes::Bytes;
use tokio::time::Instant;

use super::{CallOptions, Inner};
use crate::bus::NoReceivers;
use crate::interceptor::{ClientCall, ClientInterceptor};
use crate::trace::{TRACEPARENT, TraceContext};
use crate::wire::{self, Request};
use crate::{Channel, Error, MethodInfo, Result};

impl Inner {
    /// Lets the interceptors see (and change) a multi call or stream open before it goes out;
    /// returns the options to use and, with interceptors, the call they saw.
    pub(super) fn intercept(
        &self,
        method: MethodInfo,
        topics: &[&str],
        request: Bytes,
        opts: CallOptions,
        hook: impl Fn(&dyn ClientInterceptor, &mut ClientCall) -> Result<()>,
    ) -> Result<(CallOptions, Option<ClientCall>)> {
        if self.chain.is_empty() {
            return Ok((opts, None));
        }
        let mut call = ClientCall {
            service: self.service.clone(),
            method,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            request,
            options: opts,
            started: Instant::now(),
        };
        crate::interceptor::each(&self.chain, |i| hook(i, &mut call))?;
        Ok((call.options.clone(), Some(call)))
    }

    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::canceled());
        }
        Ok(())
    }

    pub(super) fn build_request(
        &self,
        raw: Bytes,
        opts: &CallOptions,
        deadline: Instant,
        multi: bool,
        direct: bool,
    ) -> Request {
        let sent_at = crate::time::now_unix_nanos();
        let remaining = deadline.saturating_duration_since(Instant::now());
        Request {
            request_id: crate::id::new_request_id(),
            client_id: self.id.to_string(),
            sent_at,
            expiry: sent_at.saturating_add(crate::time::nanos_i64(remaining)),
            multi,
            metadata: self.outgoing_metadata(opts),
            raw_request: raw,
            x_direct: direct,
        }
    }

    /// The call's metadata, with a `traceparent` continuing the current trace (or starting one
    /// when the client is set to) unless the caller set one.
    pub(super) fn outgoing_metadata(&self, opts: &CallOptions) -> crate::Metadata {
        let mut metadata = opts.metadata.clone();
        if !metadata.contains_key(TRACEPARENT) {
            let trace = TraceContext::current()
                .map(|current| current.child())
                .or_else(|| self.options.start_traces.then(TraceContext::new_root));
            if let Some(trace) = trace {
                trace.inject(&mut metadata);
            }
        }
        if let Some(parent) = metadata.get(TRACEPARENT) {
            let span = tracing::Span::current();
            if let Some(trace) = TraceContext::parse(parent) {
                span.record("trace_id", trace.trace_id());
            }
        }
        metadata
    }

    pub(super) async fn publish_request(
        &self,
        method: MethodInfo,
        topics: &[&str],
        request: &Request,
        deadline: Instant,
    ) -> Result<NoReceivers> {
        let payload = wire::encode_envelope(wire::REQUEST_TYPE_URL, request);
        crate::bus::check_payload_size(payload.len(), self.bus.max_payload())?;
        let channel = Channel::request(
            self.service.clone(),
            method.name(),
            topics.iter().copied(),
            method.is_queued(),
        );
        // Bounded by the call's deadline: a bus waiting for a reconnect (Redis waits up to its
        // response timeout, 3 s by default) must not hold the caller past it.
        let sent = tokio::time::timeout_at(deadline, self.bus.publish_watched(&channel, payload));
        Ok(sent.await.map_err(|_| Error::timed_out())??)
    }
}
