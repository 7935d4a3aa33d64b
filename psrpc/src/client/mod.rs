//! The client side: unary, affinity and multi calls, and subscriptions.
//!
//! A [`Client`] subscribes to its own reply channels once (responses and claims) and routes
//! every reply to the waiting call by request ID through a lock-free map. A call runs in the
//! caller's task: no task is spawned per request.

mod multi;
mod options;
mod select;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use multi::{MultiResponses, MultiResult};
pub use options::{CallOptions, ClientOptions, DEFAULT_TIMEOUT};
use select::Selector;
pub use select::{Claim, SelectionFn, SelectionOptions};
pub use subscribe::TypedSubscription;

use crate::bus::{Bus, IntoBus, NoReceivers, SubscribeOptions, Subscription, SubscriptionStats};
use crate::interceptor::{BoxResponse, ClientCall, ClientInterceptor, ClientNext};
use crate::stream::{Stream, StreamCore, StreamEnd, StreamRegistry};
use crate::trace::{TRACEPARENT, TraceContext};
use crate::wire::{self, ClaimRequest, ClaimResponse, Request, Response, StreamOpen, stream::Body};
use crate::{Channel, Error, ErrorCode, MethodInfo, MethodKind, Result};

/// A reply routed to a waiting call.
pub(crate) enum Reply {
    // Boxed: the per-call channel allocates its slots up front, so slots stay pointer-sized.
    Claim(Box<ClaimRequest>),
    Response(Box<Response>),
}

/// A client of one service. Cloning gives another handle; dropping the last one closes it.
///
/// Dropping the last handle fails its pending calls, so an unused one is a warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # async fn f() -> psrpc::Result<()> {
/// psrpc::Client::new("Greeter", psrpc::bus::LocalBus::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a client closes when its last handle is dropped"]
pub struct Client {
    inner: Arc<Inner>,
    _owner: Arc<CloseOnDrop>,
}

struct CloseOnDrop(CancellationToken);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub(crate) struct Inner {
    service: Arc<str>,
    id: Arc<str>,
    bus: Arc<dyn Bus>,
    options: ClientOptions,
    pending: DashMap<String, mpsc::UnboundedSender<Reply>>,
    streams: Arc<StreamRegistry>,
    closed: CancellationToken,
    readers: TaskTracker,
    unroutable: AtomicU64,
    malformed: AtomicU64,
    /// Counters of the response and claim subscriptions: what their full buffers dropped.
    responses: Arc<SubscriptionStats>,
    claims: Arc<SubscriptionStats>,
    chain: Arc<[Arc<dyn ClientInterceptor>]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.inner.service)
            .field("id", &self.inner.id)
            .field("bus", &self.inner.bus.name())
            .finish()
    }
}

/// Counters of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls waiting for replies now.
    pub pending: usize,
    /// Replies for requests this client is not waiting for (finished, cancelled or unknown).
    pub unroutable: u64,
    /// Payloads on the reply channels that did not decode.
    pub malformed: u64,
    /// Responses and claims dropped because the reply buffer
    /// ([`ClientOptions::subscription_capacity`]) was full. A multi call that may have lost
    /// answers this way says so in its results.
    pub dropped_replies: u64,
}

impl Client {
    /// A client of `service` on `bus`, with default options. Returns once its reply channels
    /// are live.
    ///
    /// # Errors
    /// The bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: the reply subscriptions made so far are dropped with the future.
    pub async fn new(service: impl Into<Arc<str>>, bus: impl IntoBus) -> Result<Self> {
        Self::with_options(service, bus, ClientOptions::default()).await
    }

    /// A client of `service` on `bus`.
    ///
    /// # Errors
    /// The bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`new`](Self::new).
    pub async fn with_options(
        service: impl Into<Arc<str>>,
        bus: impl IntoBus,
        options: ClientOptions,
    ) -> Result<Self> {
        let service = service.into();
        let id: Arc<str> = options
            .client_id
            .clone()
            .unwrap_or_else(crate::id::new_client_id)
            .into();
        let bus = bus.into_bus();
        let sub_opts = SubscribeOptions {
            capacity: options.subscription_capacity,
        };
        let responses = bus
            .subscribe(&Channel::response(service.clone(), id.clone()), sub_opts)
            .await?;
        let claims = bus
            .subscribe(&Channel::claim(service.clone(), id.clone()), sub_opts)
            .await?;
        let stream_frames = bus
            .subscribe(
                &Channel::client_stream(service.clone(), id.clone()),
                sub_opts,
            )
            .await?;
        let closed = CancellationToken::new();
        let chain = options.interceptors.chain();
        let inner = Arc::new(Inner {
            service,
            id,
            bus,
            options,
            pending: DashMap::new(),
            streams: Arc::default(),
            closed: closed.clone(),
            readers: TaskTracker::new(),
            unroutable: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            responses: responses.stats().clone(),
            claims: claims.stats().clone(),
            chain,
        });
        inner.readers.spawn(reply_loop(inner.clone(), responses));
        inner.readers.spawn(reply_loop(inner.clone(), claims));
        inner
            .readers
            .spawn(reply_loop(inner.clone(), stream_frames));
        inner.readers.close();
        Ok(Client {
            inner,
            _owner: Arc::new(CloseOnDrop(closed)),
        })
    }

    /// This client's ID (`CLI_…`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The bus the client runs on.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// The client's counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            pending: self.inner.pending.len(),
            unroutable: self.inner.unroutable.load(Ordering::Relaxed),
            malformed: self.inner.malformed.load(Ordering::Relaxed),
            dropped_replies: self.inner.responses.dropped() + self.inner.claims.dropped(),
        }
    }

    /// Closes the client: pending calls fail with `canceled` at once, and so do later calls;
    /// open streams are closed cleanly. Resolves once the stream closes were published, the
    /// reader tasks stopped and the bus flushed (see [`Bus::flush`]), so a process may exit
    /// right after it without losing what it sent. Bounded by the client's default timeout.
    ///
    /// Dropping the last handle of a client closes it too, without waiting for anything.
    ///
    /// # Errors
    /// The bus error of a failed flush, or `deadline_exceeded` if it took longer than the
    /// bound.
    ///
    /// # Cancel safety
    /// The client is closed at the first poll; dropping the future later only skips the wait.
    pub async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner.closed.cancel();
        let closes: Vec<_> = inner
            .streams
            .iter()
            .filter_map(|s| {
                let closed = s.value().close_queued(StreamEnd::Closed);
                // A stream still opening has no driver yet.
                drop(s.value().spawn_driver());
                closed
            })
            .collect();
        let finished = async {
            for sent in closes {
                let _ = sent.await;
            }
            inner.readers.wait().await;
            inner.bus.flush().await.map_err(Error::from)
        };
        tokio::time::timeout(inner.options.timeout, finished)
            .await
            .unwrap_or_else(|_| Err(Error::timed_out()))
    }

    /// Waits until the client's reader tasks have stopped after [`close`](Self::close).
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await;
        self.inner.readers.wait().await;
    }

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

    /// Calls a MULTI method: every server answers. The stream yields each server's result
    /// until the deadline; drop it to stop early.
    ///
    /// Answers are never lost silently: when more arrive at once than the client's reply
    /// buffer holds ([`ClientOptions::subscription_capacity`]), the stream yields an item
    /// saying how many were dropped (see [`MultiResult::dropped_answers`]).
    ///
    /// # Errors
    /// `canceled` if the client is closed, or the bus error of a failed publish.
    ///
    /// # Cancel safety
    /// Dropping the future (or the returned stream) cancels the call for the servers still
    /// working on it; the client stays usable.
    pub async fn request_multi<Req, Resp>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        req: &Req,
        opts: CallOptions,
    ) -> Result<MultiResponses<Resp>>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let inner = &self.inner;
        method.expect(method.is_multi(), "request_multi")?;
        inner.check_open()?;
        let raw = Bytes::from(req.encode_to_vec());
        let (opts, observed) = inner.intercept(method, topics, raw.clone(), opts, |i, call| {
            i.on_multi_request(call)
        })?;
        let deadline = opts.deadline_from(Instant::now(), inner.options.timeout);
        let request = inner.build_request(raw, &opts, deadline, true, false);
        let mut call = PendingCall::new(inner.clone(), request.request_id.clone(), method, topics);
        // Drops counted from here on may be answers to this call.
        let losses = multi::Losses::new(inner.responses.clone());
        let nobody = inner
            .publish_request(method, topics, &request, deadline)
            .await?;
        call.armed = true;
        Ok(MultiResponses::new(
            call,
            deadline,
            inner.closed.clone(),
            nobody,
            losses,
            observed.map(|call| (inner.chain.clone(), call)),
        ))
    }

    /// Opens a bidirectional stream to one server of a stream method: the client sends `S` and
    /// receives `R`. Claim methods choose the server as unary calls do; the call options'
    /// timeout bounds the opening.
    ///
    /// # Errors
    /// As [`request`](Self::request), for the opening.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the opening: a server that had already taken the stream
    /// gets a close. The client stays usable.
    pub async fn open_stream<S, R>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        opts: CallOptions,
    ) -> Result<Stream<S, R>>
    where
        S: Message,
        R: Message + Default,
    {
        let inner = &self.inner;
        method.expect(method.is_stream(), "open_stream")?;
        inner.check_open()?;
        let (opts, _) = inner.intercept(method, topics, Bytes::new(), opts, |i, call| {
            i.on_stream_open(call)
        })?;
        let started = Instant::now();
        let deadline = opts.deadline_from(started, inner.options.timeout);
        let stream_id = crate::id::new_stream_id();
        let open_id = crate::id::new_request_id();
        let peer =
            Channel::server_stream(inner.service.clone(), method.name(), topics.iter().copied());
        let (core, inbox) = StreamCore::new(
            stream_id.clone(),
            open_id.clone(),
            inner.bus.clone(),
            peer.clone(),
            inner.options.stream,
        );
        let acked = core.expect_open_ack();
        inner.streams.insert(stream_id.clone(), core.clone());
        // Until it is established, dropping the handle only unregisters the stream.
        let stream = Stream::new(core.clone(), inbox, Some(inner.streams.clone()), false);
        let mut call = PendingCall::new(inner.clone(), open_id.clone(), method, topics);

        let sent_at = crate::time::now_unix_nanos();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let open = wire::Stream {
            stream_id,
            request_id: open_id.clone(),
            sent_at,
            expiry: sent_at.saturating_add(crate::time::nanos_i64(remaining)),
            body: Some(Body::Open(StreamOpen {
                node_id: inner.id.to_string(),
                metadata: inner.outgoing_metadata(&opts),
                x_window: inner.options.stream.window,
            })),
        };
        let payload = wire::encode_envelope(wire::STREAM_TYPE_URL, &open);
        crate::bus::check_payload_size(payload.len(), inner.bus.max_payload())?;
        // Bounded by the deadline, as a request's publish.
        let mut nobody =
            tokio::time::timeout_at(deadline, inner.bus.publish_watched(&peer, payload))
                .await
                .map_err(|_| Error::timed_out())??;

        if method.requires_claim() {
            let selection = opts
                .selection
                .clone()
                .unwrap_or_else(|| SelectionOptions::for_method(method));
            let mut selector = Selector::new(&selection, started);
            let mut rejection = None;
            let server = loop {
                let window = selector.closes_at();
                tokio::select! {
                    biased;
                    _ = inner.closed.cancelled() => return Err(Error::canceled()),
                    reply = call.rx.recv() => match reply {
                        Some(Reply::Claim(claim)) => {
                            let claim = Claim { server_id: claim.server_id, affinity: claim.affinity };
                            if let Some(server) = selector.on_claim(claim, Instant::now()) {
                                break server;
                            }
                        }
                        Some(Reply::Response(resp)) => rejection = Some(response_error(*resp)),
                        None => return Err(Error::canceled()),
                    },
                    _ = tokio::time::sleep_until(window) => break selector.finish(rejection.take())?,
                    _ = &mut nobody => return Err(Error::no_response()),
                    _ = tokio::time::sleep_until(deadline) => return Err(Error::timed_out()),
                }
            };
            inner
                .send_claim_response(method, topics, &open_id, &server, deadline)
                .await?;
        }
        // From here a server may hold the stream: a failure must tell it.
        stream.set_close_on_drop(true);
        let peer_window = tokio::select! {
            biased;
            _ = inner.closed.cancelled() => return Err(Error::canceled()),
            window = acked => window.map_err(|_| Error::canceled())?,
            // The server refused the stream (an interceptor), closing it instead of acking.
            _ = core.closed.cancelled() => return Err(core.closed_error()),
            _ = &mut nobody => return Err(Error::no_response()),
            _ = tokio::time::sleep_until(deadline) => return Err(Error::timed_out()),
        };
        core.set_peer_window(peer_window);
        drop(core.spawn_driver());
        Ok(stream)
    }

    /// Subscribes to a subscription method on `topics`; returns once the subscription is live.
    ///
    /// Messages travel as `type.googleapis.com/<full name>` envelopes, the full name from `T`'s
    /// [`prost::Name`] (generated by `psrpc-build`; prost implements it for the wrapper types
    /// such as `String` and for `()`).
    ///
    /// # Errors
    /// The bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: a subscription dropped half-made unsubscribes.
    pub async fn subscribe<T: prost::Name + Default>(
        &self,
        method: MethodInfo,
        topics: &[&str],
    ) -> Result<TypedSubscription<T>> {
        self.subscribe_named(method, topics, &T::full_name()).await
    }

    /// Like [`subscribe`](Self::subscribe), for messages named by their proto full name
    /// (`google.protobuf.Struct`) rather than by [`prost::Name`]: the well-known types such as
    /// `prost_types::Struct` do not implement it. Generated clients use this.
    ///
    /// # Errors
    /// The bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: a subscription dropped half-made unsubscribes.
    pub async fn subscribe_named<T: Message + Default>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        full_name: &str,
    ) -> Result<TypedSubscription<T>> {
        method.expect(method.is_subscription(), "subscribe")?;
        let channel = Channel::request(
            self.inner.service.clone(),
            method.name(),
            topics.iter().copied(),
            method.is_queued(),
        );
        let sub = self
            .inner
            .bus
            .subscribe(
                &channel,
                SubscribeOptions {
                    capacity: self.inner.options.subscription_capacity,
                },
            )
            .await?;
        Ok(TypedSubscription::new(sub, full_name))
    }
}

/// Where a unary call is: choosing among claims, or waiting for the (chosen) server's answer.
enum Phase<'a> {
    Selecting(Selector<'a>),
    Waiting(Option<String>),
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn response_error(resp: Response) -> Error {
    Error::from_wire(resp.error, &resp.code, resp.error_details)
}

fn raw_response(resp: Response) -> Result<Bytes> {
    if !resp.error.is_empty() {
        return Err(response_error(resp));
    }
    Ok(resp.raw_response)
}

async fn reply_loop(inner: Arc<Inner>, mut sub: Subscription) {
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
    /// A unary call on encoded bytes: publish, select among claims, wait for the answer.
    async fn unary(
        self: &Arc<Self>,
        method: MethodInfo,
        topics: &[&str],
        raw: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes> {
        let inner = self;
        inner.check_open()?;
        let started = Instant::now();
        let deadline = opts.deadline_from(started, inner.options.timeout);
        let direct = method.is_queued() && opts.direct.unwrap_or(inner.options.direct_queue_calls);
        let request = inner.build_request(raw, &opts, deadline, false, direct);
        let mut call = PendingCall::new(inner.clone(), request.request_id.clone(), method, topics);
        let mut nobody = inner
            .publish_request(method, topics, &request, deadline)
            .await?;
        call.armed = true;

        let selection = opts
            .selection
            .clone()
            .unwrap_or_else(|| SelectionOptions::for_method(method));
        let mut phase = if method.requires_claim() {
            Phase::Selecting(Selector::new(&selection, started))
        } else {
            Phase::Waiting(None)
        };
        let mut rejection = None;
        let mut answered = false;
        // Built once for the whole call: a timer or token waiter re-created on every reply
        // would re-register each time.
        let closed = inner.closed.cancelled();
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(closed, timeout);
        let result = loop {
            // The selection window bounds the wait for claims, except on the direct path,
            // where a Rust server answers without claiming.
            let window = match &phase {
                Phase::Selecting(sel) if !direct => Some(sel.closes_at()),
                _ => None,
            };
            tokio::select! {
                biased;
                _ = &mut closed => break Err(Error::canceled()),
                reply = call.rx.recv() => match (reply, &mut phase) {
                    (Some(Reply::Response(resp)), Phase::Selecting(_)) => {
                        if direct || resp.error.is_empty() {
                            answered = true;
                            break raw_response(*resp);
                        }
                        // Before any claim only a malformed_request answer comes; keep it in
                        // case no server claims.
                        rejection = Some(response_error(*resp));
                    }
                    (Some(Reply::Response(resp)), Phase::Waiting(chosen)) => {
                        if chosen.as_ref().is_none_or(|c| *c == resp.server_id) {
                            answered = true;
                            break raw_response(*resp);
                        }
                    }
                    (Some(Reply::Claim(claim)), Phase::Selecting(sel)) => {
                        let claim = Claim { server_id: claim.server_id, affinity: claim.affinity };
                        if let Some(server) = sel.on_claim(claim, Instant::now()) {
                            inner.send_claim_response(method, topics, &call.request_id, &server, deadline).await?;
                            phase = Phase::Waiting(Some(server));
                        }
                    }
                    (Some(Reply::Claim(_)), Phase::Waiting(_)) => {}
                    (None, _) => break Err(Error::canceled()),
                },
                _ = sleep_until_opt(window) => {
                    let Phase::Selecting(sel) = std::mem::replace(&mut phase, Phase::Waiting(None)) else {
                        continue;
                    };
                    match sel.finish(rejection.take()) {
                        Ok(server) => {
                            inner.send_claim_response(method, topics, &call.request_id, &server, deadline).await?;
                            phase = Phase::Waiting(Some(server));
                        }
                        Err(err) => break Err(err),
                    }
                }
                _ = &mut nobody => break Err(Error::no_response()),
                _ = &mut timeout => break Err(Error::timed_out()),
            }
        };
        // Ended without a server's answer (no acceptable claim, timed out, closed): the armed
        // call tells the servers on drop, so those that claimed stop waiting for a choice and a
        // running handler sees its cancellation.
        call.armed = !answered;
        result
    }

    /// Lets the interceptors see (and change) a multi call or stream open before it goes out;
    /// returns the options to use and, with interceptors, the call they saw.
    fn intercept(
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

    fn check_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::canceled());
        }
        Ok(())
    }

    fn build_request(
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
    fn outgoing_metadata(&self, opts: &CallOptions) -> crate::Metadata {
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

    async fn publish_request(
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

    async fn send_claim_response(
        &self,
        method: MethodInfo,
        topics: &[&str],
        request_id: &str,
        server_id: &str,
        deadline: Instant,
    ) -> Result<()> {
        let resp = ClaimResponse {
            request_id: request_id.to_owned(),
            server_id: server_id.to_owned(),
            x_cancel: false,
        };
        let channel =
            Channel::claim_response(self.service.clone(), method.name(), topics.iter().copied());
        let payload = wire::encode_envelope(wire::CLAIM_RESPONSE_TYPE_URL, &resp);
        // Bounded by the call's deadline, as the request's publish.
        tokio::time::timeout_at(deadline, self.bus.publish(&channel, payload))
            .await
            .map_err(|_| Error::timed_out())??;
        Ok(())
    }

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
            wire::STREAM_TYPE_URL => match wire::Stream::decode(msg.value) {
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

    fn route_frame(&self, frame: wire::Stream) {
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

/// A call registered for replies; unregisters on drop, and tells the servers when the caller
/// gave up before the end (dropped the future or the stream).
pub(crate) struct PendingCall {
    inner: Arc<Inner>,
    request_id: String,
    rx: mpsc::UnboundedReceiver<Reply>,
    /// Where a cancellation goes; the channel itself is only built if one is sent.
    method: &'static str,
    topics: Vec<String>,
    /// Set while a published request awaits its outcome.
    armed: bool,
}

impl PendingCall {
    fn new(inner: Arc<Inner>, request_id: String, method: MethodInfo, topics: &[&str]) -> Self {
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

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        let message = code.as_str().to_owned();
        Error::new(code, message)
    }
}
