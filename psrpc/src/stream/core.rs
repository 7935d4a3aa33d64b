//! The state of one stream, shared by its handle, the frame router and its driver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::StreamOptions;
use crate::bus::Bus;
use crate::wire::{self, StreamAck, StreamClose, StreamMessage, stream::Body};
use crate::{Channel, Error, ErrorCode, Result};

/// The streams a client or server is part of, by stream ID.
pub(crate) type StreamRegistry = DashMap<String, Arc<StreamCore>>;

/// What Go sends when a stream ends without an error; it is the normal end, not a failure.
pub(crate) const CLEAN_CLOSE_MESSAGE: &str = "stream closed";

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
    inbox: mpsc::Sender<Incoming>,
    /// Room in the peer's window: one permit per message it may hold unacknowledged.
    window: Arc<Semaphore>,
    unacked: DashMap<String, (OwnedSemaphorePermit, Instant)>,
    /// Signalled when the last unacknowledged message is acknowledged.
    all_acked: Notify,
    pub(crate) closed: CancellationToken,
    close_error: Mutex<Option<Error>>,
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
        let core = Arc::new(StreamCore {
            id,
            open_id,
            bus,
            peer,
            options,
            inbox,
            window: Arc::new(Semaphore::new(1)),
            unacked: DashMap::new(),
            all_acked: Notify::new(),
            closed: CancellationToken::new(),
            close_error: Mutex::new(None),
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
    pub(crate) fn on_frame(&self, frame: wire::Stream) {
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
                if self.inbox.try_send(incoming).is_err() {
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
                // Dropping the permit makes room in the window.
                if self.unacked.remove(&frame.request_id).is_some() && self.unacked.is_empty() {
                    self.all_acked.notify_waiters();
                }
            }
            Some(Body::Close(close)) => {
                let clean = close.error.is_empty()
                    || (close.error == CLEAN_CLOSE_MESSAGE
                        && close.code == ErrorCode::Canceled.as_str());
                let err = (!clean).then(|| Error::from_wire(close.error, &close.code, Vec::new()));
                self.finish(err);
            }
            Some(Body::XPing(_)) | Some(Body::Open(_)) | None => {}
        }
    }

    /// Marks the stream ended (the first reason wins) without telling the peer.
    pub(crate) fn finish(&self, err: Option<Error>) {
        if self.closed.is_cancelled() {
            return;
        }
        *lock(&self.close_error) = err;
        self.closed.cancel();
    }

    /// Why the stream ended; `None` for a clean end.
    pub(crate) fn close_error(&self) -> Option<Error> {
        lock(&self.close_error).clone()
    }

    /// The error a send on a closed stream gets.
    pub(crate) fn closed_error(&self) -> Error {
        self.close_error()
            .unwrap_or_else(|| Error::new(ErrorCode::Canceled, CLEAN_CLOSE_MESSAGE))
    }

    async fn publish(
        &self,
        request_id: String,
        sent_at: i64,
        expiry: i64,
        body: Body,
    ) -> Result<()> {
        let frame = wire::Stream {
            stream_id: self.id.clone(),
            request_id,
            sent_at,
            expiry,
            body: Some(body),
        };
        let payload = wire::encode_envelope(wire::STREAM_TYPE_URL, &frame);
        crate::bus::check_payload_size(payload.len(), self.bus.max_payload())?;
        self.bus.publish(&self.peer, payload).await?;
        self.last_sent_ms.store(self.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Acknowledges the open, announcing our window.
    pub(crate) async fn ack_open(&self, open: &wire::Stream) -> Result<()> {
        let ack = StreamAck {
            x_window: self.options.window,
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
    pub(crate) async fn send(&self, raw: Bytes) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(self.closed_error());
        }
        let permit = tokio::select! {
            biased;
            _ = self.closed.cancelled() => return Err(self.closed_error()),
            permit = self.window.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Err(self.closed_error()),
            },
        };
        let request_id = crate::id::new_request_id();
        let sent_at = crate::time::now_unix_nanos();
        let timeout = self.options.ack_timeout;
        let expiry = sent_at.saturating_add(crate::time::nanos_i64(timeout));
        self.unacked.insert(
            request_id.clone(),
            (permit, crate::time::deadline_in(timeout)),
        );
        let body = Body::Message(StreamMessage { raw_message: raw });
        if let Err(err) = self
            .publish(request_id.clone(), sent_at, expiry, body)
            .await
        {
            self.unacked.remove(&request_id);
            return Err(err);
        }
        Ok(())
    }

    /// Acknowledges a message the application took.
    pub(crate) async fn ack(&self, msg: &Incoming) {
        if self.closed.is_cancelled() {
            return;
        }
        let body = Body::Ack(StreamAck::default());
        if let Err(err) = self
            .publish(msg.request_id.clone(), msg.sent_at, msg.expiry, body)
            .await
        {
            tracing::debug!(%err, stream_id = %self.id, "failed to acknowledge a stream message");
        }
    }

    /// Closes the stream from this side: waits (up to the ack timeout) for sent messages to be
    /// acknowledged, then tells the peer, with `err` or as a clean close.
    pub(crate) async fn close(&self, err: Option<Error>) {
        if self.closed.is_cancelled() {
            return;
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
            _ = self.closed.cancelled() => return,
        }
        self.close_now(err).await;
    }

    /// Tells the peer the stream ended and marks it ended here.
    pub(crate) async fn close_now(&self, err: Option<Error>) {
        if self.closed.is_cancelled() {
            return;
        }
        let close = match &err {
            None => StreamClose {
                error: CLEAN_CLOSE_MESSAGE.into(),
                code: ErrorCode::Canceled.as_str().into(),
            },
            Some(err) => StreamClose {
                error: err.message().into(),
                code: err.code().as_str().into(),
            },
        };
        // Locally our own clean close ends `recv` with `None`, an error close with the error.
        self.finish(err);
        let sent_at = crate::time::now_unix_nanos();
        let expiry = sent_at.saturating_add(crate::time::nanos_i64(self.options.ack_timeout));
        let id = crate::id::new_request_id();
        if let Err(err) = self.publish(id, sent_at, expiry, Body::Close(close)).await {
            tracing::debug!(%err, stream_id = %self.id, "failed to send a stream close");
        }
    }

    /// Watches the stream until it ends: fails it when a sent message is not acknowledged in
    /// time and, between Rust peers, sends keepalives and detects a silent (vanished) peer.
    pub(crate) async fn drive(self: Arc<Self>) {
        let tick = self
            .options
            .keepalive_interval
            .min(self.options.ack_timeout)
            .max(std::time::Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.closed.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = Instant::now();
            if self.unacked.iter().any(|entry| entry.value().1 <= now) {
                let err = Error::new(
                    ErrorCode::DeadlineExceeded,
                    "stream message not acknowledged",
                );
                self.close_now(Some(err)).await;
                return;
            }
            if !self.rust_peer.load(Ordering::Relaxed) {
                continue;
            }
            let now_ms = self.now_ms();
            let heard = self.last_heard_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(heard) >= crate::time::millis_u64(self.options.idle_timeout) {
                self.finish(Some(Error::new(
                    ErrorCode::Unavailable,
                    "stream peer vanished",
                )));
                return;
            }
            let sent = self.last_sent_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(sent)
                >= crate::time::millis_u64(self.options.keepalive_interval)
            {
                let sent_at = crate::time::now_unix_nanos();
                let id = crate::id::new_request_id();
                if let Err(err) = self
                    .publish(id, sent_at, sent_at, Body::XPing(StreamAck::default()))
                    .await
                {
                    tracing::debug!(%err, stream_id = %self.id, "failed to send a keepalive");
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
