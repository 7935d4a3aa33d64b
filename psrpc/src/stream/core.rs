//! The state of one stream, shared by its handle, the frame router and its driver.

use crate::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod driver;

use super::{StreamEnd, StreamOptions};
use crate::bus::{Bus, BusError};
use crate::wire::{self, StreamAck, StreamClose, StreamMessage, stream_frame::Body};
use crate::{Channel, Error, ErrorCode, Result};

/// The streams a client or server is part of, by stream ID.
pub(crate) type StreamRegistry = DashMap<String, Arc<StreamCore>>;

/// What Go sends when a stream ends without an error; it is the normal end, not a failure.
pub(crate) const CLEAN_CLOSE_MESSAGE: &str = "stream closed";

/// What waits for the stream's driver to publish it, in order.
enum Outgoing {
    /// A user message whose publish `send` started and could not finish at once: the driver
    /// completes it before anything queued after it.
    Started(BoxFuture<'static, std::result::Result<(), BusError>>),
    /// An encoded frame.
    Frame {
        payload: Bytes,
        /// A user message: a failed publish ends the stream (the peer would never ack it).
        message: bool,
        /// Told the publish result (a close waits for it).
        done: Option<oneshot::Sender<Result<()>>>,
    },
    /// The ack of messages the application took: the frame names the first, a Rust peer
    /// learns the others from `more`, and consecutive acks to a Rust peer leave as one frame.
    Ack {
        request_id: String,
        sent_at: i64,
        expiry: i64,
        more: Vec<String>,
    },
}

/// Most acks one frame carries: bounded so a frame stays small.
const MAX_ACKS_PER_FRAME: usize = 256;

/// A user message received and not yet acknowledged.
pub(crate) struct Incoming {
    pub(crate) request_id: String,
    pub(crate) sent_at: i64,
    pub(crate) expiry: i64,
    pub(crate) raw: Bytes,
}

pub(crate) struct StreamCore {
    pub(crate) id: String,
    /// The open's request ID: its ack carries it.
    open_id: String,
    bus: Arc<dyn Bus>,
    /// Where this side's frames go.
    peer: Channel,
    pub(crate) options: StreamOptions,
    /// Taken when the stream ends, so the receiving half sees the end after what is buffered.
    inbox: Mutex<Option<mpsc::Sender<Incoming>>>,
    /// Frames for the driver to publish. Handing frames over without awaiting is what makes
    /// `recv` and `send` cancel safe: nothing is half-done when their futures are dropped.
    outbox: mpsc::UnboundedSender<Outgoing>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    /// Frames queued for the driver and not yet published: while there are none, `send`
    /// publishes itself, saving the hand-off to the driver.
    queued: AtomicUsize,
    /// Held by `send` from its check of `queued` to the end of its publish or queueing, so
    /// two senders cannot overtake each other's queued frames.
    send_order: Mutex<()>,
    /// Room in the peer's window: one permit per message it may hold unacknowledged.
    window: Arc<Semaphore>,
    unacked: DashMap<String, (OwnedSemaphorePermit, Instant)>,
    /// Signalled when the last unacknowledged message is acknowledged.
    all_acked: Notify,
    pub(crate) closed: CancellationToken,
    end: Mutex<Option<StreamEnd>>,
    rust_peer: AtomicBool,
    born: Instant,
    last_heard_ms: AtomicU64,
    last_sent_ms: AtomicU64,
    open_ack: Mutex<Option<oneshot::Sender<u32>>>,
    dropped: AtomicU64,
    /// Between Rust peers, acks of messages taken while more were waiting in the inbox: they
    /// leave together when the inbox runs dry or the batch is full, so a busy receiver sends
    /// one ack frame for many messages instead of one each.
    held_acks: Mutex<Vec<Incoming>>,
}

impl StreamCore {
    pub(crate) fn new(
        id: String,
        open_id: String,
        bus: Arc<dyn Bus>,
        peer: Channel,
        options: StreamOptions,
    ) -> (Arc<Self>, mpsc::Receiver<Incoming>) {
        // The buffer holds a full window, so a peer that respects it never overflows it.
        let (inbox, rx) = mpsc::channel(options.window.max(1) as usize);
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let core = Arc::new(StreamCore {
            id,
            open_id,
            bus,
            peer,
            options,
            inbox: Mutex::new(Some(inbox)),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            queued: AtomicUsize::new(0),
            send_order: Mutex::new(()),
            window: Arc::new(Semaphore::new(1)),
            unacked: DashMap::new(),
            all_acked: Notify::new(),
            closed: CancellationToken::new(),
            end: Mutex::new(None),
            rust_peer: AtomicBool::new(false),
            born: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
            open_ack: Mutex::new(None),
            dropped: AtomicU64::new(0),
            held_acks: Mutex::new(Vec::new()),
        });
        (core, rx)
    }

    fn now_ms(&self) -> u64 {
        crate::time::millis_u64(self.born.elapsed())
    }

    /// Waits for the ack of the open; resolves with the server's announced window.
    pub(crate) fn expect_open_ack(&self) -> oneshot::Receiver<u32> {
        let (tx, rx) = oneshot::channel();
        *lock(&self.open_ack) = Some(tx);
        rx
    }

    /// Records the peer's window: 0 (a Go peer) keeps stop-and-wait and no keepalives.
    pub(crate) fn set_peer_window(&self, window: u32) {
        if window > 0 {
            self.rust_peer.store(true, Ordering::Relaxed);
            self.window.add_permits(window as usize - 1);
        }
        self.last_heard_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Messages dropped because the peer overran our window.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Handles a frame routed to this stream.
    pub(crate) fn on_frame(&self, frame: wire::StreamFrame) {
        self.last_heard_ms.store(self.now_ms(), Ordering::Relaxed);
        match frame.body {
            Some(Body::Message(msg)) => {
                let incoming = Incoming {
                    request_id: frame.request_id,
                    sent_at: frame.sent_at,
                    expiry: frame.expiry,
                    raw: msg.raw_message,
                };
                // Full means the peer ignored our window: no ack, so it sees a failed send.
                let delivered = match &*lock(&self.inbox) {
                    Some(inbox) => inbox.try_send(incoming).is_ok(),
                    None => return,
                };
                if !delivered {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stream_id = %self.id, "stream message over the window dropped");
                }
            }
            Some(Body::Ack(ack)) => {
                if frame.request_id == self.open_id
                    && let Some(tx) = lock(&self.open_ack).take()
                {
                    let _ = tx.send(ack.x_window);
                    return;
                }
                // Dropping the permits makes room in the window.
                let mut removed = self.unacked.remove(&frame.request_id).is_some();
                for id in &ack.x_more {
                    removed |= self.unacked.remove(id).is_some();
                }
                if removed && self.unacked.is_empty() {
                    self.all_acked.notify_waiters();
                }
            }
            Some(Body::Close(close)) => {
                let clean = close.error.is_empty()
                    || (close.error == CLEAN_CLOSE_MESSAGE
                        && close.code == ErrorCode::Canceled.as_str());
                self.finish(if clean {
                    StreamEnd::PeerClosed
                } else {
                    StreamEnd::PeerError(Error::from_wire(close.error, &close.code, Vec::new()))
                });
            }
            Some(Body::XPing(_)) | Some(Body::Open(_)) | None => {}
        }
    }

    /// Marks the stream ended (the first reason wins) without telling the peer.
    pub(crate) fn finish(&self, end: StreamEnd) {
        {
            let mut slot = lock(&self.end);
            if slot.is_some() {
                return;
            }
            *slot = Some(end);
        }
        // Acks still held go out with the last frames (the driver drains what was queued).
        self.flush_held_acks();
        // The receiving half drains what is buffered, then sees the end.
        lock(&self.inbox).take();
        self.closed.cancel();
    }

    /// Why the stream ended; `None` while it is open.
    pub(crate) fn end(&self) -> Option<StreamEnd> {
        lock(&self.end).clone()
    }

    /// The error a send on a closed stream gets.
    pub(crate) fn closed_error(&self) -> Error {
        self.end()
            .and_then(|end| end.error())
            .unwrap_or_else(|| Error::new(ErrorCode::Canceled, CLEAN_CLOSE_MESSAGE))
    }

    /// Encodes a frame of this stream.
    fn encode(&self, request_id: String, sent_at: i64, expiry: i64, body: Body) -> Result<Bytes> {
        let frame = wire::StreamFrame {
            stream_id: self.id.clone(),
            request_id,
            sent_at,
            expiry,
            body: Some(body),
        };
        let payload = wire::encode_envelope(wire::STREAM_TYPE_URL, &frame);
        crate::bus::check_payload_size(payload.len(), self.bus.max_payload())?;
        Ok(payload)
    }

    /// Hands a frame to the driver, which publishes frames in the order they were queued.
    fn queue(&self, payload: Bytes, message: bool, done: Option<oneshot::Sender<Result<()>>>) {
        self.push(Outgoing::Frame {
            payload,
            message,
            done,
        });
    }

    fn push(&self, out: Outgoing) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        // The driver holds the receiver until the stream ends; after that nobody listens.
        let _ = self.outbox.send(out);
    }

    /// Publishes a frame now, bypassing the queue (before the driver runs, or after it).
    async fn publish(
        &self,
        request_id: String,
        sent_at: i64,
        expiry: i64,
        body: Body,
    ) -> Result<()> {
        let payload = self.encode(request_id, sent_at, expiry, body)?;
        self.publish_payload(payload).await
    }

    /// Acknowledges the open, announcing our window.
    pub(crate) async fn ack_open(&self, open: &wire::StreamFrame) -> Result<()> {
        let ack = StreamAck {
            x_window: self.options.window,
            ..Default::default()
        };
        self.publish(
            open.request_id.clone(),
            open.sent_at,
            open.expiry,
            Body::Ack(ack),
        )
        .await
    }

    /// Sends a user message once the peer's window has room.
    ///
    /// Cancel safe: the only wait is for window room; once there is room the message is
    /// committed in a single poll (published, or handed to the driver), and the future
    /// completes. A dropped future has therefore sent nothing.
    pub(crate) async fn send(self: &Arc<Self>, raw: Bytes) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(self.closed_error());
        }
        let request_id = crate::id::new_request_id();
        let sent_at = crate::time::now_unix_nanos();
        let timeout = self.options.ack_timeout;
        let expiry = crate::time::unix_nanos_after(timeout);
        // Encoded (and size-checked) before waiting, so a refusal costs no window room.
        let body = Body::Message(StreamMessage { raw_message: raw });
        let payload = self.encode(request_id.clone(), sent_at, expiry, body)?;
        let permit = tokio::select! {
            biased;
            _ = self.closed.cancelled() => return Err(self.closed_error()),
            permit = self.window.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Err(self.closed_error()),
            },
        };
        if self.closed.is_cancelled() {
            return Err(self.closed_error());
        }
        let ack_by = crate::time::deadline_in(timeout);
        self.unacked.insert(request_id, (permit, ack_by));
        // Completes in this one poll (no await inside), so the message is committed whether
        // or not the caller keeps polling.
        let mut payload = Some(payload);
        futures::future::poll_fn(|cx| {
            if let Some(payload) = payload.take() {
                self.commit(payload, cx);
            }
            Poll::Ready(())
        })
        .await;
        Ok(())
    }

    /// Publishes a message from the sender's task when nothing is queued before it, or hands
    /// it to the driver: published directly if the bus accepts it on the first poll, else the
    /// started publish goes to the driver, which finishes it before anything queued later.
    fn commit(self: &Arc<Self>, payload: Bytes, cx: &mut std::task::Context<'_>) {
        let _order = lock(&self.send_order);
        if self.queued.load(Ordering::Acquire) > 0 {
            self.queue(payload, true, None);
            return;
        }
        let core = self.clone();
        let mut publish: BoxFuture<'static, _> =
            Box::pin(async move { core.bus.publish(&core.peer, payload).await });
        match publish.as_mut().poll(cx) {
            Poll::Ready(result) => self.published_message(result.map_err(Error::from)),
            Poll::Pending => self.push(Outgoing::Started(publish)),
        }
    }

    /// Records the outcome of a user message's publish: a failure ends the stream, since the
    /// peer would never acknowledge the message.
    fn published_message(&self, result: Result<()>) {
        match result {
            Ok(()) => self.last_sent_ms.store(self.now_ms(), Ordering::Relaxed),
            Err(err) => self.finish(StreamEnd::Bus(err)),
        }
    }

    /// Acknowledges a message the application took: queued, never awaited.
    ///
    /// `more_waiting` says whether the inbox still holds messages. Then, between Rust peers,
    /// the ack is held (up to a quarter of our window) to leave with the next ones: the
    /// application is about to take those, and the message behind it is still unacknowledged
    /// anyway, so holding delays the sender by no more than that message's own wait. Go peers
    /// get one ack per message, as they expect.
    pub(crate) fn ack(&self, msg: Incoming, more_waiting: bool) {
        if self.closed.is_cancelled() {
            return;
        }
        if !self.rust_peer.load(Ordering::Relaxed) {
            self.queue_acks(msg, Vec::new());
            return;
        }
        let hold_limit = (self.options.window / 4) as usize;
        let mut held = lock(&self.held_acks);
        if more_waiting && held.len() < hold_limit {
            held.push(msg);
            return;
        }
        let more = held.drain(..).map(|held| held.request_id).collect();
        drop(held);
        self.queue_acks(msg, more);
    }

    /// Queues the acks held by [`ack`](Self::ack), if any.
    pub(crate) fn flush_held_acks(&self) {
        let mut held = std::mem::take(&mut *lock(&self.held_acks)).into_iter();
        if let Some(first) = held.next() {
            self.queue_acks(first, held.map(|held| held.request_id).collect());
        }
    }

    fn queue_acks(&self, first: Incoming, more: Vec<String>) {
        self.push(Outgoing::Ack {
            request_id: first.request_id,
            sent_at: first.sent_at,
            expiry: first.expiry,
            more,
        });
    }

    /// Closes the stream from this side: waits (up to the ack timeout) for sent messages to be
    /// acknowledged, then tells the peer, with `err` or as a clean close. Returns whether the
    /// close frame reached the bus; `Ok` if the stream had already ended.
    ///
    /// Cancel safe until the close is committed: dropped while waiting for acks, the stream
    /// stays open; once the close is queued it happens whether or not the future is polled.
    pub(crate) async fn close(&self, err: Option<Error>) -> Result<()> {
        if self.closed.is_cancelled() {
            return Ok(());
        }
        let drained = async {
            loop {
                // Register before checking, so an ack in between is not missed.
                let acked = self.all_acked.notified();
                if self.unacked.is_empty() {
                    break;
                }
                acked.await;
            }
        };
        tokio::select! {
            _ = drained => {}
            _ = tokio::time::sleep(self.options.ack_timeout) => {}
            _ = self.closed.cancelled() => return Ok(()),
        }
        let end = match err {
            None => StreamEnd::Closed,
            Some(err) => StreamEnd::ClosedWithError(err),
        };
        match self.close_queued(end) {
            Some(sent) => sent.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Ends the stream at once and queues the close frame for the driver, after what is
    /// already queued. `None` if it had already ended; otherwise resolves with the publish
    /// result of the close frame.
    pub(crate) fn close_queued(&self, end: StreamEnd) -> Option<oneshot::Receiver<Result<()>>> {
        if self.closed.is_cancelled() {
            return None;
        }
        let payload = match self.close_frame(&end) {
            Ok(payload) => payload,
            Err(err) => {
                self.finish(end);
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(err));
                return Some(rx);
            }
        };
        let (tx, rx) = oneshot::channel();
        // Held acks first: the peer should learn what we took before it learns of the end.
        self.flush_held_acks();
        // Queued before the stream is marked ended, so the driver's final drain sees it.
        self.queue(payload, false, Some(tx));
        self.finish(end);
        Some(rx)
    }

    /// Ends the stream and publishes the close frame directly: for when no driver runs (a
    /// refused open, a killed server).
    pub(crate) async fn close_now(&self, end: StreamEnd) -> Result<()> {
        if self.closed.is_cancelled() {
            return Ok(());
        }
        let payload = self.close_frame(&end);
        self.finish(end);
        self.bus.publish(&self.peer, payload?).await?;
        Ok(())
    }

    fn close_frame(&self, end: &StreamEnd) -> Result<Bytes> {
        let close = match end.error() {
            None => StreamClose {
                error: CLEAN_CLOSE_MESSAGE.into(),
                code: ErrorCode::Canceled.as_str().into(),
            },
            Some(err) => StreamClose {
                error: err.message().into(),
                code: err.wire_code().into(),
            },
        };
        let sent_at = crate::time::now_unix_nanos();
        let expiry = crate::time::unix_nanos_after(self.options.ack_timeout);
        let id = crate::id::new_request_id();
        self.encode(id, sent_at, expiry, Body::Close(close))
    }

    /// Waits until what was published has reached the broker.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.bus.flush().await.map_err(Error::from)
    }
}
