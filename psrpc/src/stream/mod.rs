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

mod core;

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;

use self::core::Incoming;
pub(crate) use self::core::{StreamCore, StreamRegistry};
use crate::{Error, Result};

/// Tuning of streams, per client or server.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// Messages this side accepts unacknowledged; announced to Rust peers (default 64).
    pub window: u32,
    /// How long a sent message may wait for its acknowledgement (default 3 s).
    pub ack_timeout: Duration,
    /// Between Rust peers: how often an idle side sends a keepalive (default 1 s).
    pub keepalive_interval: Duration,
    /// Between Rust peers: silence after which the peer counts as vanished (default 5 s).
    pub idle_timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            window: 64,
            ack_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// One side of an open stream: sends `S`, receives `R`.
///
/// The client gets one from `Client::open_stream`, a server handler is given one. Dropping the
/// client's handle (both halves, after [`split`](Self::split)) closes the stream; a server's
/// stream closes when its handler returns.
///
/// ```no_run
/// # async fn f(mut stream: psrpc::stream::Stream<String, String>) -> psrpc::Result<()> {
/// stream.send(&"hello".to_string()).await?;
/// while let Some(reply) = stream.recv().await {
///     println!("{}", reply?);
/// }
/// stream.close(None).await;
/// # Ok(()) }
/// ```
#[must_use = "dropping a stream closes it"]
pub struct Stream<S, R> {
    sender: StreamSender<S>,
    receiver: StreamReceiver<R>,
}

/// The sending half of a [`Stream`]; cloneable, so several tasks can send.
#[must_use = "dropping a stream closes it"]
pub struct StreamSender<S> {
    guard: Arc<Guard>,
    _type: PhantomData<fn(S)>,
}

/// The receiving half of a [`Stream`].
#[must_use = "dropping a stream closes it"]
pub struct StreamReceiver<R> {
    guard: Arc<Guard>,
    inbox: mpsc::Receiver<Incoming>,
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
    /// # Errors
    /// Why the stream ended if it has, or a bus error.
    pub async fn send(&self, msg: &S) -> Result<()> {
        self.sender.send(msg).await
    }

    /// The next message, acknowledging it to the sender. `None` once the stream ended cleanly;
    /// `Some(Err(_))` when it ended with an error or a message did not decode.
    pub async fn recv(&mut self) -> Option<Result<R>> {
        self.receiver.recv().await
    }

    /// Closes the stream, after the peer acknowledged what was sent (up to the ack timeout):
    /// cleanly with `None`, or with an error the peer receives.
    pub async fn close(&self, err: Option<Error>) {
        self.sender.close(err).await
    }

    /// True once the stream has ended, from either side.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Resolves when the stream ends, from either side.
    pub async fn closed(&self) {
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
    /// Sends a message; waits while the peer's window is full.
    ///
    /// # Errors
    /// Why the stream ended if it has, or a bus error.
    pub async fn send(&self, msg: &S) -> Result<()> {
        self.guard.core.send(msg.encode_to_vec().into()).await
    }

    /// Closes the stream; see [`Stream::close`].
    pub async fn close(&self, err: Option<Error>) {
        self.guard.core.close(err).await;
    }

    /// True once the stream has ended, from either side.
    pub fn is_closed(&self) -> bool {
        self.guard.core.closed.is_cancelled()
    }

    /// Resolves when the stream ends, from either side.
    pub async fn closed(&self) {
        self.guard.core.closed.cancelled().await
    }
}

impl<R: Message + Default> StreamReceiver<R> {
    /// The next message; see [`Stream::recv`].
    pub async fn recv(&mut self) -> Option<Result<R>> {
        let core = &self.guard.core;
        let incoming = tokio::select! {
            biased;
            msg = self.inbox.recv() => msg,
            _ = core.closed.cancelled() => self.inbox.try_recv().ok(),
        };
        match incoming {
            Some(msg) => {
                core.ack(&msg).await;
                Some(R::decode(msg.raw).map_err(Error::malformed_result))
            }
            None => core.close_error().map(Err),
        }
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
        // A dropped client handle closes the stream, so the server handler ends too.
        let core = self.core.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { core.close_now(None).await });
            }
            Err(_) => core.finish(None),
        }
    }
}
