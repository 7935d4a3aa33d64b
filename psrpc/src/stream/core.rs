//! The state of one stream, shared by its handle, the frame router and its driver.

use crate::sync::lock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod driver;

use super::{StreamEnd, StreamOptions};
use crate::bus::Bus;
use crate::wire::{self, StreamAck, StreamClose, StreamMessage, stream_frame::Body};
use crate::{Channel, Error, ErrorCode, Result};

/// The streams a client or server is part of, by stream ID.
pub(crate) type StreamRegistry = DashMap<String, Arc<StreamCore>>;

/// What Go sends when a stream ends without an error; it is the normal end, not a failure.
pub(crate) const CLEAN_CLOSE_MESSAGE: &str = "stream closed";

/// What waits for the stream's driver to publish it, in order.
enum Outgoing {
    /// An encoded frame.
    Frame {
        payload: Bytes,
        /// A user message: a failed publish ends the stream (the peer would never ack it).
        message: bool,
        /// Told the publish result (a close waits for it).
        done: Option<oneshot::Sender<Result<()>>>,
    },
    /// The ack of a message the application took; consecutive acks to a Rust peer leave as
    /// one frame.
    Ack {
        request_id: String,
        sent_at: i64,
        expiry: i64,
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
        // The driver holds the receiver until the stream ends; after that nobody listens.
        let _ = self.outbox.send(Outgoing::Frame {
            payload,
            message,
            done,
        });
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
    /// Cancel safe: the only await is for window room; once there is room the message is
    /// queued for the driver without awaiting, and the future completes. A dropped future has
    /// therefore sent nothing.
    pub(crate) async fn send(&self, raw: Bytes) -> Result<()> {
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
        self.queue(payload, true, None);
        Ok(())
    }

    /// Acknowledges a message the application took: queued, never awaited.
    pub(crate) fn ack(&self, msg: &Incoming) {
        if self.closed.is_cancelled() {
            return;
        }
        let _ = self.outbox.send(Outgoing::Ack {
            request_id: msg.request_id.clone(),
            sent_at: msg.sent_at,
            expiry: msg.expiry,
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
