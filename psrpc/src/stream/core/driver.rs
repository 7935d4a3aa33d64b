//! The stream's driver: the task that publishes queued frames in order, checks acks and,
//! between Rust peers, sends keepalives and notices a silent peer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{MAX_ACKS_PER_FRAME, Outgoing, StreamCore};
use crate::stream::StreamEnd;
use crate::sync::lock;
use crate::wire::{StreamAck, stream_frame::Body};
use crate::{Error, Result};

impl StreamCore {
    /// Publishes `out` and, when it is an ack to a Rust peer, the acks queued right behind it
    /// in the same frame (then whatever ended the run of acks).
    async fn write(&self, out: Outgoing, outbox: &mut mpsc::UnboundedReceiver<Outgoing>) {
        let mut next = Some(out);
        while let Some(out) = next.take() {
            match out {
                Outgoing::Started(publish) => {
                    self.published_message(publish.await.map_err(Error::from));
                }
                Outgoing::Frame {
                    payload,
                    message,
                    done,
                } => {
                    let result = self.publish_payload(payload).await;
                    if let Err(err) = &result {
                        if message {
                            self.finish(StreamEnd::Bus(err.clone()));
                        } else {
                            tracing::debug!(%err, stream_id = %self.id, "failed to publish a stream frame");
                        }
                    }
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
                Outgoing::Ack {
                    request_id,
                    sent_at,
                    expiry,
                    more,
                } => {
                    let mut ack = StreamAck {
                        x_more: more,
                        ..Default::default()
                    };
                    // Go peers expect one ack per message.
                    if self.rust_peer.load(Ordering::Relaxed) {
                        while ack.x_more.len() < MAX_ACKS_PER_FRAME {
                            match outbox.try_recv() {
                                Ok(Outgoing::Ack {
                                    request_id, more, ..
                                }) => {
                                    self.queued.fetch_sub(1, Ordering::AcqRel);
                                    ack.x_more.push(request_id);
                                    ack.x_more.extend(more);
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    let published = match self.encode(request_id, sent_at, expiry, Body::Ack(ack)) {
                        Ok(payload) => self.publish_payload(payload).await,
                        Err(err) => Err(err),
                    };
                    if let Err(err) = published {
                        tracing::debug!(%err, stream_id = %self.id, "failed to acknowledge stream messages");
                    }
                }
            }
            // Done with this frame: once none is left, `send` may publish directly again.
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(super) async fn publish_payload(&self, payload: Bytes) -> Result<()> {
        self.bus.publish(&self.peer, payload).await?;
        self.last_sent_ms.store(self.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Starts the stream's driver on the current runtime, unless it runs already (or there is
    /// no runtime, when nothing could run it anyway).
    ///
    /// The driver runs the stream until it ends: publishes queued frames in order, fails the
    /// stream when a sent message is not acknowledged in time and, between Rust peers, sends
    /// keepalives and detects a silent (vanished) peer. After the end it publishes what was
    /// queued before it (the last acks and the close frame), then returns.
    pub(crate) fn spawn_driver(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let outbox = lock(&self.outbox_rx).take()?;
        Some(runtime.spawn(self.clone().drive(outbox)))
    }

    async fn drive(self: Arc<Self>, mut outbox: mpsc::UnboundedReceiver<Outgoing>) {
        let tick = self
            .options
            .keepalive_interval
            .min(self.options.ack_timeout)
            .max(std::time::Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                out = outbox.recv() => match out {
                    Some(out) => self.write(out, &mut outbox).await,
                    None => return,
                },
                _ = self.closed.cancelled() => break,
                _ = interval.tick() => self.check().await,
            }
        }
        // Everything queued before the end; later frames have nobody to read them.
        while let Ok(out) = outbox.try_recv() {
            self.write(out, &mut outbox).await;
        }
    }

    /// The periodic checks of [`drive`](Self::drive).
    async fn check(&self) {
        // A safety net: held acks normally leave when the receiver takes the next message.
        self.flush_held_acks();
        let now = Instant::now();
        if self.unacked.iter().any(|entry| entry.value().1 <= now) {
            drop(self.close_queued(StreamEnd::AckTimeout));
            return;
        }
        let now_ms = self.now_ms();
        let heard = self.last_heard_ms.load(Ordering::Relaxed);
        let silent_ms = now_ms.saturating_sub(heard);
        if !self.rust_peer.load(Ordering::Relaxed) {
            // A Go peer sends no keepalives: only an explicit limit on silence applies.
            if let Some(limit) = self.options.silent_peer_timeout
                && silent_ms >= crate::time::millis_u64(limit)
            {
                drop(self.close_queued(StreamEnd::IdleTimeout));
            }
            return;
        }
        if silent_ms >= crate::time::millis_u64(self.options.idle_timeout) {
            self.finish(StreamEnd::PeerVanished);
            return;
        }
        let sent = self.last_sent_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(sent) >= crate::time::millis_u64(self.options.keepalive_interval) {
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
