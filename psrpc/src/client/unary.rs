//! Unary calls: one server answers, chosen among its claims or reached directly.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;

use super::claim::{Answers, Selected};
use super::pending::PendingCall;
use super::reply::{Reply, raw_response};
use super::{CallOptions, Client, Inner};
use crate::interceptor::{BoxResponse, ClientCall, ClientNext};
use crate::{Error, MethodInfo, MethodKind, Result};

impl Client {
    /// Calls a unary method (QUEUE or AFFINITY routing, or `single_server`) and returns the
    /// chosen server's response.
    ///
    /// # Errors
    /// The server's error, or `deadline_exceeded` (timed out), `unavailable` (no server),
    /// `canceled` (client closed), `malformed_result`, or a bus error.
    ///
    /// # Cancel safety
    /// Dropping the future cancels the call: servers that claimed it are told, and a handler
    /// already running sees [`RequestContext::cancelled`](crate::RequestContext::cancelled)
    /// (a Go server drops a request still waiting for its claim). The request may have been
    /// served already. The client stays usable.
    pub async fn request<Req, Resp>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        req: &Req,
        opts: CallOptions,
    ) -> Result<Resp>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let inner = &self.inner;
        method.expect(matches!(method.kind(), MethodKind::Unary(_)), "request")?;
        let raw = Bytes::from(req.encode_to_vec());
        let span = tracing::debug_span!(
            "psrpc.client",
            service = %inner.service,
            method = method.name(),
            topics = ?topics,
            client_id = %inner.id,
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            code = tracing::field::Empty,
        );
        let outcome = async {
            if inner.chain.is_empty() {
                return inner.unary(method, topics, raw, opts).await;
            }
            // Fixed before the chain runs, so interceptors that run the call more than once
            // (retries) stay within the caller's deadline.
            let started = Instant::now();
            let mut opts = opts;
            opts.deadline = Some(opts.deadline_from(started, inner.options.timeout));
            let call = ClientCall {
                service: inner.service.clone(),
                method,
                topics: topics.iter().map(|t| t.to_string()).collect(),
                request: raw,
                options: opts,
                started,
            };
            let sender = inner.clone();
            let send = Arc::new(move |call: ClientCall| -> BoxResponse {
                let inner = sender.clone();
                Box::pin(async move {
                    let topics: Vec<&str> = call.topics.iter().map(String::as_str).collect();
                    inner
                        .unary(call.method, &topics, call.request, call.options)
                        .await
                })
            });
            ClientNext::new(inner.chain.clone(), send).run(call).await
        }
        .instrument(span.clone())
        .await;
        span.record(
            "code",
            outcome.as_ref().err().map_or("ok", |e| e.code().as_str()),
        );
        Resp::decode(outcome?).map_err(Error::malformed_result)
    }
}

impl Inner {
    /// A unary call on encoded bytes: publish, select among claims, wait for the answer.
    async fn unary(
        self: &Arc<Self>,
        method: MethodInfo,
        topics: &[&str],
        raw: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes> {
        self.check_open()?;
        let started = Instant::now();
        let deadline = opts.deadline_from(started, self.options.timeout);
        let direct = method.is_queued() && opts.direct.unwrap_or(self.options.direct_queue_calls);
        let request = self.build_request(raw, &opts, deadline, false, direct);
        let mut call = PendingCall::new(self.clone(), request.request_id.clone(), method, topics);
        let mut nobody = self
            .publish_request(method, topics, &request, deadline)
            .await?;
        // Until a server answers, a call that ends (no acceptable claim, timed out, closed,
        // dropped) tells the servers on drop, so those that claimed stop waiting for a choice
        // and a running handler sees its cancellation.
        call.armed = true;

        let chosen = if method.requires_claim() {
            let answers = if direct {
                Answers::All
            } else {
                Answers::Successes
            };
            let selected = self
                .select_server(
                    &mut call,
                    &opts.selection_for(method),
                    started,
                    deadline,
                    &mut nobody,
                    answers,
                )
                .await?;
            match selected {
                Selected::Server(server) => Some(server),
                Selected::Answered(resp) => {
                    call.armed = false;
                    return raw_response(*resp);
                }
            }
        } else {
            None
        };

        // Built once for the whole wait: a timer or token waiter re-created on every reply
        // would re-register each time.
        let closed = self.closed.cancelled();
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(closed, timeout);
        loop {
            tokio::select! {
                biased;
                _ = &mut closed => return Err(Error::canceled()),
                reply = call.rx.recv() => match reply {
                    Some(Reply::Response(resp)) => {
                        if chosen.as_ref().is_none_or(|c| *c == resp.server_id) {
                            call.armed = false;
                            return raw_response(*resp);
                        }
                    }
                    Some(Reply::Claim(_)) => {}
                    None => return Err(Error::canceled()),
                },
                _ = &mut nobody => return Err(Error::no_response()),
                _ = &mut timeout => return Err(Error::timed_out()),
            }
        }
    }
}
