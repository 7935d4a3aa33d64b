//! The processors: what runs for one accepted request (claim, interceptors, handler,
//! deadline, response) or one opened stream.

use super::*;

/// Keeps a handler's cancellation token findable while it runs, even if the handler panics.
pub(super) struct Running<'a> {
    inner: &'a Inner,
    request_id: &'a str,
}

impl<'a> Running<'a> {
    fn register(inner: &'a Inner, request_id: &'a str, cancel: &CancellationToken) -> Self {
        inner.running.insert(request_id.to_owned(), cancel.clone());
        Running { inner, request_id }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.inner.running.remove(self.request_id);
    }
}

pub(super) fn set_error(resp: &mut Response, err: &Error) {
    resp.error = err.message().to_owned();
    resp.code = err.wire_code().to_owned();
    resp.error_details = err.details().to_vec();
}

pub(super) fn decode_request(payload: Bytes) -> Option<Request> {
    let msg = wire::decode_envelope(payload).ok()?;
    if msg.type_url != wire::REQUEST_TYPE_URL {
        return None;
    }
    Request::decode(msg.value).ok()
}

/// Builds the per-request work of a unary or multi method: decode, claim, handle, respond.
pub(super) fn unary_processor<Req, Resp, H, Fut>(
    method: MethodInfo,
    handler: H,
    affinity: Option<AffinityFn<Req>>,
) -> Processor
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Send + 'static,
    H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(
        move |inner: Arc<Inner>, req: Request, deadline: Instant, topics: Arc<[String]>| {
            let handler = handler.clone();
            let affinity = affinity.clone();
            Box::pin(async move {
                let received_at = Instant::now();
                let typed = match Req::decode(req.raw_request.clone()) {
                    Ok(typed) => typed,
                    Err(err) => {
                        Counters::incr(&inner.counters.malformed);
                        inner
                            .respond(&req, Err(Error::malformed_request(err)))
                            .await;
                        return;
                    }
                };
                // A queue-routed request reached this server alone: answer a Rust caller directly.
                let direct = req.x_direct && method.is_queued();
                if method.requires_claim() && !direct {
                    let score = affinity.as_ref().map_or(1.0, |f| f(&typed));
                    if !inner
                        .claim(&req.request_id, &req.client_id, score, deadline)
                        .await
                    {
                        return;
                    }
                }
                let cancel = inner.kill.child_token();
                let _running = Running::register(&inner, &req.request_id, &cancel);
                let mut timer = inner.presence.begin(method.name());
                let trace = TraceContext::from_metadata(&req.metadata).map(|parent| parent.child());
                let span = tracing::debug_span!(
                    "psrpc.server",
                    service = %inner.service,
                    method = method.name(),
                    topics = ?topics,
                    request_id = %req.request_id,
                    client_id = %req.client_id,
                    server_id = %inner.id,
                    trace_id = tracing::field::Empty,
                    code = tracing::field::Empty,
                );
                if let Some(trace) = &trace {
                    span.record("trace_id", trace.trace_id());
                }
                let ctx = RequestContext {
                    service: inner.service.clone(),
                    method,
                    topics,
                    request_id: req.request_id.clone(),
                    client_id: req.client_id.clone(),
                    server_id: inner.id.clone(),
                    metadata: req.metadata.clone(),
                    deadline,
                    cancel: cancel.clone(),
                    multi: req.multi,
                    received_at,
                    sent_at: req.sent_at,
                    trace: trace.clone(),
                };
                let serve = move |ctx: RequestContext| -> BoxResponse {
                    Box::pin(
                        handler(ctx, typed)
                            .map(|r| r.map(|resp| Bytes::from(resp.encode_to_vec()))),
                    )
                };
                let work = if inner.chain.is_empty() {
                    serve(ctx)
                } else {
                    let call = ServerCall {
                        ctx,
                        request: req.raw_request.clone(),
                    };
                    ServerNext::new(inner.chain.clone(), move |call: ServerCall| serve(call.ctx))
                        .run(call)
                };
                // Calls the handler makes continue the caller's trace.
                let work = match trace {
                    Some(trace) => Box::pin(trace.scope(work)) as BoxResponse,
                    None => work,
                };
                let result = tokio::select! {
                    biased;
                    _ = inner.kill.cancelled() => Err(inner.stopped_error()),
                    result = work.instrument(span.clone()) => result,
                    _ = tokio::time::sleep_until(deadline) => Err(Error::timed_out()),
                };
                span.record(
                    "code",
                    result.as_ref().err().map_or("ok", |e| e.code().as_str()),
                );
                Counters::incr(&inner.counters.handled);
                if let Some(mut timer) = timer.take() {
                    timer.ok(result.is_ok());
                }
                if cancel.is_cancelled() && !inner.kill.is_cancelled() {
                    // The caller is gone: nobody would read a response.
                    Counters::incr(&inner.counters.cancelled);
                    return;
                }
                inner.respond(&req, result).await;
            })
        },
    )
}

/// Builds the work of a stream open: claim, acknowledge, run the handler, close.
pub(super) fn stream_processor<In, Out, H, Fut>(method: MethodInfo, handler: H) -> StreamProcessor
where
    In: Message + Default + Send + 'static,
    Out: Message + Send + 'static,
    H: Fn(RequestContext, Stream<Out, In>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(
        move |inner: Arc<Inner>,
              open: wire::StreamFrame,
              deadline: Instant,
              topics: Arc<[String]>| {
            let handler = handler.clone();
            Box::pin(async move {
                let received_at = Instant::now();
                let Some(Body::Open(opening)) = &open.body else {
                    return;
                };
                if method.requires_claim()
                    && !inner
                        .claim(&open.request_id, &opening.node_id, 1.0, deadline)
                        .await
                {
                    return;
                }
                let peer = Channel::client_stream(inner.service.clone(), opening.node_id.as_str());
                let (core, inbox) = StreamCore::new(
                    open.stream_id.clone(),
                    open.request_id.clone(),
                    inner.bus.clone(),
                    peer,
                    inner.options.stream,
                );
                core.set_peer_window(opening.x_window);
                inner.streams.insert(open.stream_id.clone(), core.clone());
                let trace =
                    TraceContext::from_metadata(&opening.metadata).map(|parent| parent.child());
                let mut ctx = RequestContext {
                    service: inner.service.clone(),
                    method,
                    topics,
                    request_id: open.request_id.clone(),
                    client_id: opening.node_id.clone(),
                    server_id: inner.id.clone(),
                    metadata: opening.metadata.clone(),
                    // A stream lives until either side closes it.
                    deadline: crate::time::deadline_in(STREAM_HORIZON),
                    cancel: core.closed.clone(),
                    multi: false,
                    received_at,
                    sent_at: open.sent_at,
                    trace: trace.clone(),
                };
                if let Err(err) =
                    crate::interceptor::each(&inner.chain, |i| i.on_stream_open(&mut ctx))
                {
                    // Refused: the client's open fails with this error.
                    if let Err(err) = core.close_now(StreamEnd::ClosedWithError(err)).await {
                        tracing::debug!(%err, stream_id = %open.stream_id, "failed to refuse a stream");
                    }
                    inner.streams.remove(&open.stream_id);
                    return;
                }
                if let Err(err) = core.ack_open(&open).await {
                    Counters::incr(&inner.counters.publish_errors);
                    tracing::warn!(%err, stream_id = %open.stream_id, "failed to acknowledge a stream open");
                    inner.streams.remove(&open.stream_id);
                    return;
                }
                let span = tracing::debug_span!(
                    "psrpc.server.stream",
                    service = %inner.service,
                    method = method.name(),
                    stream_id = %open.stream_id,
                    client_id = %opening.node_id,
                    server_id = %inner.id,
                    trace_id = tracing::field::Empty,
                    code = tracing::field::Empty,
                );
                if let Some(trace) = &trace {
                    span.record("trace_id", trace.trace_id());
                }
                let stream = Stream::new(core.clone(), inbox, None, false);
                let chain = inner.chain.clone();
                let served = async {
                    let observed = ctx.clone();
                    let handled = handler(ctx, stream);
                    let result = match trace {
                        Some(trace) => trace.scope(handled).await,
                        None => handled.await,
                    };
                    for interceptor in chain.iter() {
                        interceptor.on_stream_close(&observed, &result);
                    }
                    let code = result.as_ref().err().map_or("ok", |e| e.code().as_str());
                    tracing::Span::current().record("code", code);
                    if let Err(err) = core.close(result.err()).await {
                        tracing::debug!(%err, "failed to close a stream");
                    }
                };
                let Some(mut driver) = core.spawn_driver() else {
                    // Only without a runtime, which cannot be while this task runs.
                    inner.streams.remove(&open.stream_id);
                    return;
                };
                tokio::select! {
                    biased;
                    // Killed, or shut down past the drain deadline: the handler is dropped.
                    _ = inner.kill.cancelled() => drop(core.close_queued(StreamEnd::ServerShutdown)),
                    _ = served.instrument(span) => {}
                }
                // The driver publishes what is queued (the close last) and ends; a stuck bus
                // cannot hold the server past the bound.
                if tokio::time::timeout(FINAL_PUBLISH_BOUND, &mut driver)
                    .await
                    .is_err()
                {
                    driver.abort();
                    tracing::debug!(stream_id = %open.stream_id, "stream driver did not finish in time");
                }
                inner.streams.remove(&open.stream_id);
                Counters::incr(&inner.counters.handled);
            })
        },
    )
}

/// The deadline a stream handler's context reports: streams have none.
pub(super) const STREAM_HORIZON: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600);
