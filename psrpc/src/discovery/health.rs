//! A server's health, and the gate that keeps a not-serving server from taking new calls.
//!
//! Not serving, a server unsubscribes its request channels (so the broker gives queue
//! deliveries to other members and the server sees no request to claim), handles what was
//! already delivered to it, and subscribes again once serving.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::watch;

pub use super::wire::HealthStatus;
use crate::Channel;
use crate::bus::{Bus, SubscribeOptions, Subscription};

/// How long a gate waits before retrying a failed re-subscribe.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(500);

/// A registration's request subscription, closed while the server is not serving.
pub(crate) struct Gate {
    sub: Option<Subscription>,
    /// Closed for health: drain what is buffered, then wait to serve again.
    closing: bool,
    /// Drained for good by [`Gate::drain_now`].
    done: bool,
    health: Option<watch::Receiver<HealthStatus>>,
    bus: Arc<dyn Bus>,
    channel: Channel,
    options: SubscribeOptions,
}

impl Gate {
    /// Gates `sub` (on `channel`) by `health`; `None` never closes it (stream registrations,
    /// whose open streams need their frames).
    pub(crate) fn new(
        sub: Subscription,
        health: Option<watch::Receiver<HealthStatus>>,
        bus: Arc<dyn Bus>,
        channel: Channel,
        options: SubscribeOptions,
    ) -> Self {
        Gate {
            sub: Some(sub),
            closing: false,
            done: false,
            health,
            bus,
            channel,
            options,
        }
    }

    fn serving(&self) -> bool {
        self.health
            .as_ref()
            .is_none_or(|h| *h.borrow() != HealthStatus::NotServing)
    }

    /// The next payload; `None` once the subscription ended for good.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing received is lost; a re-subscribe cut short is retried.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            if !self.serving()
                && !self.closing
                && let Some(sub) = &mut self.sub
            {
                // Unsubscribes; what is buffered can still be read.
                sub.close();
                self.closing = true;
            }
            match &mut self.sub {
                Some(sub) => {
                    let health = self.health.as_mut().filter(|_| !self.closing);
                    tokio::select! {
                        biased;
                        payload = sub.recv() => match payload {
                            Some(payload) => return Some(payload),
                            None if self.closing => {
                                self.sub = None;
                                self.closing = false;
                            }
                            None => return None,
                        },
                        changed = async { health.expect("guarded").changed().await }, if health.is_some() => {
                            if changed.is_err() {
                                // The server is gone; keep serving what arrives.
                                self.health = None;
                            }
                        }
                    }
                }
                None => {
                    if !self.serving() {
                        let health = self.health.as_mut().expect("not serving has a health");
                        if health.changed().await.is_err() {
                            self.health = None;
                        }
                        continue;
                    }
                    match self.bus.subscribe(&self.channel, self.options).await {
                        Ok(sub) => self.sub = Some(sub),
                        Err(err) => {
                            tracing::warn!(%err, channel = ?self.channel, "re-subscribe after serving again failed");
                            tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
                        }
                    }
                }
            }
        }
    }

    /// Unsubscribes for good and returns what was already delivered, to be handled.
    pub(crate) fn drain_now(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some(sub) = &mut self.sub {
            sub.close();
            while let Some(Some(payload)) = sub.recv().now_or_never() {
                out.push(payload);
            }
        }
        self.sub = None;
        self.done = true;
        out
    }
}
