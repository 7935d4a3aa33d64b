//! Bidirectional streams (`option (psrpc.options).stream = true`).
//!
//! Frames are Go psrpc's: an open (claimed like a unary call), its ack, messages each
//! acknowledged by the receiver, and a close. Between Rust peers, which announce themselves
//! through a field Go ignores, a stream does better:
//!
//! - **Pipelining.** A sender may have up to the peer's window of messages unacknowledged
//!   instead of one, so throughput is not one message per round trip. Go peers get
//!   stop-and-wait, as they expect.
//! - **Backpressure.** A receiver acknowledges a message when the application takes it
//!   ([`Stream::recv`]), so a slow receiver makes the sender wait for window space instead of
//!   losing messages; a message not acknowledged within [`StreamOptions::ack_timeout`] fails the
//!   stream with `deadline_exceeded`.
//! - **Liveness.** Rust peers send keepalives when idle; a peer silent for
//!   [`StreamOptions::idle_timeout`] counts as vanished and the stream fails with `unavailable`.
//!   Go peers send none; [`StreamOptions::silent_peer_timeout`] bounds their silence if set.
//!
//! Every async method of a stream is cancel safe (see each `# Cancel safety` section): frames
//! go out through a per-stream driver task, in order, so dropping a `send` or `recv` future in a
//! `select!` or a `timeout` never loses a message or leaves the stream half-updated.
//!
//! The receiving side is a [`futures::Stream`] of `Result<R>`, like tonic's `Streaming`: it
//! yields the messages, then the error that ended the stream if any, then `None`.
//! [`Stream::end_reason`] says why a stream ended ([`StreamEnd`]).

mod core;
mod end;

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use self::core::Incoming;
pub(crate) use self::core::{StreamCore, StreamRegistry};
pub use self::end::StreamEnd;
use crate::{Error, Result};

/// Tuning of streams, per client or server.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Messages this side accepts unacknowledged; announced to Rust peers (default 64).
    pub window: u32,
    /// How long a sent message may wait for its acknowledgement (default 3 s).
    pub ack_timeout: Duration,
    /// Between Rust peers: how often an idle side sends a keepalive (default 1 s).
    pub keepalive_interval: Duration,
    /// Between Rust peers: silence after which the peer counts as vanished (default 5 s).
    pub idle_timeout: Duration,
    /// With a peer that sends no keepalives (a Go psrpc peer): silence after which the stream
    /// is closed with [`StreamEnd::IdleTimeout`]. `None` (the default) waits forever, as Go
    /// does; a server's shutdown still ends such streams at its drain deadline.
    pub silent_peer_timeout: Option<Duration>,
}

impl StreamOptions {
    /// Sets [`window`](Self::window).
    pub fn window(mut self, window: u32) -> Self {
        self.window = window;
        self
    }

    /// Sets [`ack_timeout`](Self::ack_timeout).
    pub fn ack_timeout(mut self, ack_timeout: Duration) -> Self {
        self.ack_timeout = ack_timeout;
        self
    }

    /// Sets [`keepalive_interval`](Self::keepalive_interval).
    pub fn keepalive_interval(mut self, keepalive_interval: Duration) -> Self {
        self.keepalive_interval = keepalive_interval;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`silent_peer_timeout`](Self::silent_peer_timeout).
    pub fn silent_peer_timeout(mut self, silent_peer_timeout: Duration) -> Self {
        self.silent_peer_timeout = Some(silent_peer_timeout);
        self
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window: 64,
            ack_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            silent_peer_timeout: None,
        }
    }
}

/// One side of an open stream: sends `S`, receives `R`.
///
/// The client gets one from `Client::open_stream`, a server handler is given one. Dropping the
/// client's handle (both halves, after [`split`](Self::split)) closes the stream in the
/// background; a server's stream closes when its handler returns. To be sure the close reached
/// the broker before the process exits, call [`close`](Self::close) and await it.
///
/// ```no_run
/// use futures::StreamExt;
///
/// # async fn f(mut stream: psrpc::stream::Stream<String, String>) -> psrpc::Result<()> {
/// stream.send(&"hello".to_string()).await?;
/// while let Some(reply) = stream.next().await {
///     println!("{}", reply?);
/// }
/// println!("ended: {:?}", stream.end_reason());
/// stream.close(None).await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping a stream closes it"]
pub struct Stream<S, R> {
    sender: StreamSender<S>,
    receiver: StreamReceiver<R>,
}

/// The sending half of a [`Stream`]; cloneable, so several tasks can send.
#[must_use = "dropping both halves of a stream closes it"]
pub struct StreamSender<S> {
    guard: Arc<Guard>,
    _type: PhantomData<fn(S)>,
}

/// The receiving half of a [`Stream`]; a [`futures::Stream`] of the peer's messages.
#[must_use = "dropping both halves of a stream closes it"]
pub struct StreamReceiver<R> {
    guard: Arc<Guard>,
    inbox: mpsc::Receiver<Incoming>,
    /// Set once the end was reported, so the stream yields `None` from then on.
    done: bool,
    _type: PhantomData<fn() -> R>,
}

/// Closes a client's stream, and unregisters it, when the last half is dropped.
struct Guard {
    core: Arc<StreamCore>,
    /// The client's registry; `None` on a server, whose task unregisters the stream once it has
    /// closed (frames such as the last acks must still reach it after the handler returned).
    registry: Option<Arc<StreamRegistry>>,
    close_on_drop: AtomicBool,
}

impl<S, R> std::fmt::Debug for Stream<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("stream_id", &self.sender.guard.core.id)
            .field("closed", &self.sender.guard.core.closed.is_cancelled())
            .finish()
    }
}

impl<S> std::fmt::Debug for StreamSender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender")
            .field("stream_id", &self.guard.core.id)
            .finish()
    }
}

impl<R> std::fmt::Debug for StreamReceiver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("stream_id", &self.guard.core.id)
            .finish()
    }
}

impl<S> Clone for StreamSender<S> {
    fn clone(&self) -> Self {
        StreamSender {
            guard: self.guard.clone(),
            _type: PhantomData,
        }
    }
}

impl<S: Message, R: Message + Default> Stream<S, R> {
    pub(crate) fn new(
        core: Arc<StreamCore>,
        inbox: mpsc::Receiver<Incoming>,
        registry: Option<Arc<StreamRegistry>>,
        close_on_drop: bool,
    ) -> Self {
        let guard = Arc::new(Guard {
            core,
            registry,
            close_on_drop: AtomicBool::new(close_on_drop),
        });
        Stream {
            sender: StreamSender {
                guard: guard.clone(),
                _type: PhantomData,
            },
            receiver: StreamReceiver {
                guard,
                inbox,
                done: false,
                _type: PhantomData,
            },
        }
    }

    pub(crate) fn set_close_on_drop(&self, close: bool) {
        self.sender
            .guard
            .close_on_drop
            .store(close, Ordering::Relaxed);
    }

    /// The stream ID (`STR_…`).
    pub fn id(&self) -> &str {
        &self.sender.guard.core.id
    }

    /// Sends a message; waits while the peer's window is full.
    ///
    /// Resolves once the message is committed to the stream: committed messages are
    /// published in order, by `send` itself when nothing is queued before it, otherwise by the
    /// stream's driver. A bus failure to publish one ends the stream
    /// ([`StreamEnd::Bus`]), reported by the next call.
    ///
    /// # Errors
    /// Why the stream ended if it has, or `invalid_argument` for a message over the bus limit.
    ///
    /// # Cancel safety
    /// Cancel safe. If the future is dropped before it completes, the message was not sent
    /// (as with tokio's `mpsc::Sender::send`), and the stream stays usable.
    pub async fn send(&self, msg: &S) -> Result<()> {
        self.sender.send(msg).await
    }

    /// The next message, acknowledging it to the sender. `None` once the stream ended cleanly;
    /// the error that ended it otherwise (once, then `None`), or `Some(Err(_))` for a message
    /// that did not decode. The same as [`StreamExt::next`](futures::StreamExt::next).
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken from the stream only when the future completes with it,
    /// so in a `select!` or a `timeout` no message is lost.
    pub async fn recv(&mut self) -> Option<Result<R>> {
        self.receiver.recv().await
    }

    /// Closes the stream, after the peer acknowledged what was sent (up to the ack timeout):
    /// cleanly with `None`, or with an error the peer receives. Resolves once the close frame
    /// has reached the broker (see [`Bus::flush`](crate::Bus::flush)).
    ///
    /// # Errors
    /// The bus error if the close frame could not be published or flushed. `Ok` when the
    /// stream had already ended.
    ///
    /// # Cancel safety
    /// Dropped while waiting for the peer's acks, the stream stays open. Once the close is
    /// committed (the stream reports ended) it completes in the background, and dropping the
    /// future only skips waiting for the broker.
    pub async fn close(&self, err: Option<Error>) -> Result<()> {
        self.sender.close(err).await
    }

    /// True once the stream has ended, from either side.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Why the stream ended; `None` while it is open.
    pub fn end_reason(&self) -> Option<StreamEnd> {
        self.sender.end_reason()
    }

    /// Resolves when the stream ends, from either side, with why.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) -> StreamEnd {
        self.sender.closed().await
    }

    /// Messages the peer sent beyond our window, dropped unacknowledged.
    pub fn dropped(&self) -> u64 {
        self.sender.guard.core.dropped()
    }

    /// Splits into halves that can be used from different tasks, for full-duplex traffic.
    pub fn split(self) -> (StreamSender<S>, StreamReceiver<R>) {
        (self.sender, self.receiver)
    }
}

impl<S: Message> StreamSender<S> {
    /// Sends a message; see [`Stream::send`].
    ///
    /// # Errors
    /// As [`Stream::send`].
    ///
    /// # Cancel safety
    /// Cancel safe; see [`Stream::send`].
    pub async fn send(&self, msg: &S) -> Result<()> {
        self.guard.core.send(msg.encode_to_vec().into()).await
    }

    /// Closes the stream; see [`Stream::close`].
    ///
    /// # Errors
    /// As [`Stream::close`].
    ///
    /// # Cancel safety
    /// As [`Stream::close`].
    pub async fn close(&self, err: Option<Error>) -> Result<()> {
        let core = &self.guard.core;
        core.close(err).await?;
        core.flush().await
    }

    /// True once the stream has ended, from either side.
    pub fn is_closed(&self) -> bool {
        self.guard.core.closed.is_cancelled()
    }

    /// Why the stream ended; `None` while it is open.
    pub fn end_reason(&self) -> Option<StreamEnd> {
        self.guard.core.end()
    }

    /// Resolves when the stream ends, from either side, with why.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) -> StreamEnd {
        let core = &self.guard.core;
        core.closed.cancelled().await;
        core.end().unwrap_or(StreamEnd::Closed)
    }
}

impl<R: Message + Default> StreamReceiver<R> {
    /// The next message; see [`Stream::recv`].
    ///
    /// # Cancel safety
    /// Cancel safe; see [`Stream::recv`].
    pub async fn recv(&mut self) -> Option<Result<R>> {
        futures::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Why the stream ended; `None` while it is open.
    pub fn end_reason(&self) -> Option<StreamEnd> {
        self.guard.core.end()
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let core = &self.guard.core;
        match self.inbox.poll_recv(cx) {
            Poll::Ready(Some(mut msg)) => {
                let raw = std::mem::take(&mut msg.raw);
                // Queued, not awaited: taking the message and acking it happen together.
                core.ack(msg, !self.inbox.is_empty());
                Poll::Ready(Some(R::decode(raw).map_err(Error::malformed_result)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(core.end().and_then(|end| end.error()).map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: Message + Default> futures::Stream for StreamReceiver<R> {
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

impl<S, R: Message + Default> futures::Stream for Stream<S, R> {
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().receiver.poll_message(cx)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            registry.remove(&self.core.id);
        }
        if !self.close_on_drop.load(Ordering::Relaxed) || self.core.closed.is_cancelled() {
            return;
        }
        // A dropped client handle closes the stream, so the server handler ends too; the
        // stream's driver publishes the close after what was queued before it.
        drop(self.core.close_queued(StreamEnd::Closed));
        // Dropped while opening, before the driver started: start it to send the close.
        drop(self.core.spawn_driver());
    }
}
