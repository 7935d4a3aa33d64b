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

use super::{PendingCall, Reply, raw_response};
use crate::Error;
use crate::Result;
use crate::bus::NoReceivers;
use crate::interceptor::{ClientCall, ClientInterceptor};

/// The interceptors that see each answer, and the call they saw go out.
pub(crate) type Observed = (Arc<[Arc<dyn ClientInterceptor>]>, ClientCall);

/// One server's answer to a multi call.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiResult<T> {
    /// The answering server.
    pub server_id: String,
    /// Its response or error.
    pub result: Result<T>,
}

/// The answers of a multi call, one per server, until the call's deadline.
///
/// Dropping the stream ends the call early (and tells Rust servers still working on it).
///
/// ```no_run
/// # use futures::StreamExt;
/// # async fn f(client: psrpc::Client) -> psrpc::Result<()> {
/// const STATS: psrpc::MethodInfo = psrpc::MethodInfo::multi("Stats");
/// let mut answers = client.request_multi::<(), String>(&STATS, &[], &(), Default::default()).await?;
/// while let Some(answer) = answers.next().await {
///     println!("{}: {:?}", answer.server_id, answer.result);
/// }
/// # Ok(()) }
/// ```
pub struct MultiResponses<T> {
    call: PendingCall,
    timer: Pin<Box<Sleep>>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    nobody: NoReceivers,
    observed: Option<Observed>,
    done: bool,
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
        observed: Option<Observed>,
    ) -> Self {
        MultiResponses {
            call,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            closed: Box::pin(closed.cancelled_owned()),
            nobody,
            observed,
            done: false,
            _type: PhantomData,
        }
    }

    /// The request ID of the call.
    pub fn request_id(&self) -> &str {
        &self.call.request_id
    }

    /// Collects every answer until the deadline.
    ///
    /// # Cancel safety
    /// Dropping the future drops the call with the answers collected so far, as dropping the
    /// stream does.
    pub async fn collect_all(self) -> Vec<MultiResult<T>> {
        futures::StreamExt::collect(self).await
    }

    fn finish(&mut self) -> Poll<Option<MultiResult<T>>> {
        self.done = true;
        // Reaching the deadline or closing is the normal end, not a cancellation.
        self.call.armed = false;
        Poll::Ready(None)
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
                    let raw = MultiResult {
                        server_id: resp.server_id.clone(),
                        result: raw_response(*resp),
                    };
                    if let Some((chain, call)) = &this.observed {
                        chain.iter().for_each(|i| i.on_multi_result(call, &raw));
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
        // Nobody received the request (when the bus can tell), or the deadline passed.
        if Pin::new(&mut this.nobody).poll(cx).is_ready() || this.timer.as_mut().poll(cx).is_ready()
        {
            return this.finish();
        }
        Poll::Pending
    }
}

use std::future::Future as _;
