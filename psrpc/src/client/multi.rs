//! The stream of per-server results of a multi call.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use prost::Message;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use std::sync::Arc;

use bytes::Bytes;

use super::{CallOptions, Client, PendingCall, Reply, raw_response};
use crate::MethodInfo;
use crate::bus::{NoReceivers, SubscriptionStats};
use crate::interceptor::{ClientCall, ClientInterceptor};
use crate::{Error, ErrorCode, Result};

impl Client {
    /// Calls a MULTI method: every server answers. The stream yields each server's result
    /// until the deadline; drop it to stop early.
    ///
    /// Answers are never lost silently: when more arrive at once than the client's reply
    /// buffer holds ([`ClientOptions::subscription_capacity`](super::ClientOptions::subscription_capacity)), the stream yields an item
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
        let losses = Losses::new(inner.responses.clone());
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
}

/// The interceptors that see each answer, and the call they saw go out.
pub(crate) type Observed = (Arc<[Arc<dyn ClientInterceptor>]>, ClientCall);

/// One server's answer to a multi call, or a report of answers lost.
///
/// When answers arrive faster than the client's reply buffer takes them, the buffer drops the
/// excess. The stream then yields an item with an empty `server_id` and a `resource_exhausted`
/// error "N answers dropped: …" ([`dropped_answers`](Self::dropped_answers) reads N).
#[derive(Clone, Debug, PartialEq)]
pub struct MultiResult<T> {
    /// The answering server (empty for a loss report).
    pub server_id: String,
    /// Its response or error.
    pub result: Result<T>,
}

/// The message of a loss report begins with the count and this.
const DROPPED: &str = " answers dropped: ";

impl<T> MultiResult<T> {
    /// A report of `count` answers that may have been lost.
    fn dropped(count: u64) -> Self {
        let message = format!(
            "{count}{DROPPED}the client's reply buffer was full (raise ClientOptions::subscription_capacity)"
        );
        MultiResult {
            server_id: String::new(),
            result: Err(Error::new(ErrorCode::ResourceExhausted, message)),
        }
    }

    /// For a loss report, how many answers were dropped; `None` for a server's answer.
    ///
    /// The count is of replies the client's buffer dropped while this call was waiting; with
    /// several calls in flight some may have been answers to the others.
    pub fn dropped_answers(&self) -> Option<u64> {
        let err = self.result.as_ref().err()?;
        if !self.server_id.is_empty() || err.code() != ErrorCode::ResourceExhausted {
            return None;
        }
        let (count, _) = err.message().split_once(DROPPED)?;
        count.parse().ok()
    }
}

/// Watches the reply buffer's drop counter for the span of one call.
pub(crate) struct Losses {
    stats: Arc<SubscriptionStats>,
    seen: u64,
}

impl Losses {
    pub(crate) fn new(stats: Arc<SubscriptionStats>) -> Self {
        let seen = stats.dropped();
        Losses { stats, seen }
    }

    /// Drops counted since the last look.
    fn take(&mut self) -> u64 {
        let now = self.stats.dropped();
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        new
    }
}

/// The answers of a multi call, one per server, until the call's deadline.
///
/// Dropping the stream ends the call early (and tells Rust servers still working on it).
///
/// ```no_run
/// # use futures::StreamExt;
/// # async fn f(client: psrpc::Client) -> psrpc::Result<()> {
/// const STATS: psrpc::MethodInfo = psrpc::MethodInfo::multi("Stats");
/// let mut answers = client.request_multi::<(), String>(STATS, &[], &(), Default::default()).await?;
/// while let Some(answer) = answers.next().await {
///     println!("{}: {:?}", answer.server_id, answer.result);
/// }
/// # Ok(()) }
/// ```
#[must_use = "dropping the answers ends the multi call"]
pub struct MultiResponses<T> {
    call: PendingCall,
    timer: Pin<Box<Sleep>>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    nobody: NoReceivers,
    losses: Losses,
    observed: Option<Observed>,
    done: bool,
    /// Discovery hook: ends the call early once its condition is met.
    completion: Option<crate::discovery::Progress>,
    /// The completion condition was met: the call ends at the next poll that finds no answer
    /// waiting. A flag rather than resetting `timer` to now: the timer wheel rounds deadlines
    /// up to its next millisecond tick, which added up to 1 ms to every early call.
    met: bool,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for MultiResponses<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiResponses")
            .field("request_id", &self.call.request_id)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: Message + Default> MultiResponses<T> {
    pub(crate) fn new(
        call: PendingCall,
        deadline: Instant,
        closed: CancellationToken,
        nobody: NoReceivers,
        losses: Losses,
        observed: Option<Observed>,
    ) -> Self {
        MultiResponses {
            call,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            closed: Box::pin(closed.cancelled_owned()),
            nobody,
            losses,
            observed,
            done: false,
            completion: None,
            met: false,
            _type: PhantomData,
        }
    }

    /// The request ID of the call.
    pub fn request_id(&self) -> &str {
        &self.call.request_id
    }

    /// Ends the call as soon as `completion` is met (for example every server a
    /// [`Discovery`](crate::discovery::Discovery) knows answered, see
    /// [`Discovery::all_known`](crate::discovery::Discovery::all_known)) instead of at the
    /// deadline, which stays the bound. Call it before polling: only answers the stream
    /// yields afterwards count.
    pub fn until(mut self, completion: crate::discovery::Completion) -> Self {
        self.completion = Some(crate::discovery::Progress::new(completion));
        self
    }

    /// Collects every answer until the deadline.
    ///
    /// # Cancel safety
    /// Dropping the future drops the call with the answers collected so far, as dropping the
    /// stream does.
    pub async fn collect_all(self) -> Vec<MultiResult<T>> {
        futures::StreamExt::collect(self).await
    }

    /// Ends the stream, after a last loss report if answers were dropped meanwhile.
    fn finish(&mut self) -> Poll<Option<MultiResult<T>>> {
        if let Some(report) = self.loss_report() {
            return Poll::Ready(Some(report));
        }
        self.done = true;
        // Reaching the deadline or closing is the normal end, not a cancellation.
        self.call.armed = false;
        Poll::Ready(None)
    }

    fn loss_report(&mut self) -> Option<MultiResult<T>> {
        let dropped = self.losses.take();
        (dropped > 0).then(|| MultiResult::dropped(dropped))
    }
}

impl<T: Message + Default> Stream for MultiResponses<T> {
    type Item = MultiResult<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.closed.as_mut().poll(cx).is_ready() {
            return this.finish();
        }
        loop {
            match this.call.rx.poll_recv(cx) {
                Poll::Ready(Some(Reply::Response(resp))) => {
                    let mut resp = *resp;
                    let raw = MultiResult {
                        server_id: std::mem::take(&mut resp.server_id),
                        result: raw_response(resp),
                    };
                    if let Some((chain, call)) = &this.observed {
                        chain.iter().for_each(|i| i.on_multi_result(call, &raw));
                    }
                    if let Some(progress) = &mut this.completion
                        && progress.answered(&raw.server_id)
                    {
                        // Yield this answer; the next poll ends the call.
                        this.completion = None;
                        this.met = true;
                    }
                    let result = raw
                        .result
                        .and_then(|bytes: Bytes| T::decode(bytes).map_err(Error::malformed_result));
                    return Poll::Ready(Some(MultiResult {
                        server_id: raw.server_id,
                        result,
                    }));
                }
                Poll::Ready(Some(Reply::Claim(_))) => continue,
                Poll::Ready(None) => return this.finish(),
                Poll::Pending => break,
            }
        }
        // Every answer routed so far is out: report drops now rather than at the deadline.
        if let Some(report) = this.loss_report() {
            return Poll::Ready(Some(report));
        }
        // The completion condition was met, nobody received the request (when the bus can
        // tell), or the deadline passed.
        if this.met
            || Pin::new(&mut this.nobody).poll(cx).is_ready()
            || this.timer.as_mut().poll(cx).is_ready()
        {
            return this.finish();
        }
        Poll::Pending
    }
}

use std::future::Future as _;
