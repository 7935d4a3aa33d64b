//! The client side: unary, affinity and multi calls, and subscriptions.
//!
//! A [`Client`] subscribes to its own reply channels once (responses and claims) and routes
//! every reply to the waiting call by request ID through a lock-free map. A call runs in the
//! caller's task: no task is spawned per request.
//!
//! One file per piece: [`Client`] and its life here; `unary`, `multi`, `stream` and `subscribe`
//! hold the four kinds of calls; `claim` the claim exchange that unary calls and stream opens
//! share (with `select` the rules it chooses by); `outgoing` what a call sends; `reply` and
//! `pending` how replies reach the waiting call.

mod claim;
mod multi;
mod options;
mod outgoing;
mod pending;
mod reply;
mod select;
mod stream;
mod subscribe;
mod unary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use multi::{MultiResponses, MultiResult};
pub use options::{CallOptions, ClientOptions, DEFAULT_TIMEOUT};
pub use select::{Claim, SelectionFn, SelectionOptions};
pub use subscribe::TypedSubscription;

// Shared with the children (multi.rs reads them through `super::`).
use pending::PendingCall;
use reply::{Reply, raw_response, reply_loop};

use crate::bus::{Bus, IntoBus, SubscribeOptions, SubscriptionStats};
use crate::interceptor::ClientInterceptor;
use crate::stream::{StreamEnd, StreamRegistry};
use crate::{Channel, Error, Result};

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
}
