//! Helpers shared by the runtime tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use psrpc::bus::{LocalBus, Tap};
use psrpc::channel::ChannelKind;
use psrpc::{Channel, wire};

/// A real in-process bus that also records every publish, to assert what went on the wire.
#[derive(Clone)]
pub struct RecordingBus {
    tap: Tap,
    log: Arc<Mutex<Vec<(Channel, Bytes)>>>,
}

impl RecordingBus {
    pub fn new(inner: LocalBus) -> Self {
        let log: Arc<Mutex<Vec<(Channel, Bytes)>>> = Arc::default();
        let sink = log.clone();
        let tap = Tap::new(inner, move |channel, payload| {
            // Discovery announcements are not part of the call exchanges asserted here.
            if channel.service() == psrpc::discovery::DISCOVERY_SERVICE {
                return true;
            }
            sink.lock()
                .unwrap()
                .push((channel.clone(), payload.clone()));
            true
        });
        RecordingBus { tap, log }
    }

    /// The bus to hand to clients and servers.
    pub fn bus(&self) -> Tap {
        self.tap.clone()
    }

    /// The kinds of the channels published to, in order.
    pub fn kinds(&self) -> Vec<ChannelKind> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.kind())
            .collect()
    }

    /// Type URLs of the envelopes published, in order.
    pub fn type_urls(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| wire::decode_envelope(p.clone()).unwrap().type_url)
            .collect()
    }

    /// The payloads published, in order.
    pub fn payloads(&self) -> Vec<Bytes> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// A real in-process bus whose publishes can be cut, as if this node's network went away.
#[derive(Clone)]
pub struct CuttableBus {
    tap: Tap,
    cut: Arc<AtomicBool>,
}

impl CuttableBus {
    pub fn new(inner: LocalBus) -> Self {
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let tap = Tap::new(inner, move |_, _| !flag.load(Ordering::SeqCst));
        CuttableBus { tap, cut }
    }

    /// The bus to hand to clients and servers.
    pub fn bus(&self) -> Tap {
        self.tap.clone()
    }

    /// From now on, publishes vanish.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl psrpc::IntoBus for RecordingBus {
    fn into_bus(self) -> Arc<dyn psrpc::Bus> {
        self.tap.into_bus()
    }
}

impl psrpc::IntoBus for CuttableBus {
    fn into_bus(self) -> Arc<dyn psrpc::Bus> {
        self.tap.into_bus()
    }
}

/// Hands a value out of a handler closure once (handlers are `Fn`, one-shot senders are not).
pub fn slot<T>(value: T) -> Arc<Mutex<Option<T>>> {
    Arc::new(Mutex::new(Some(value)))
}

/// Takes the value out of a [`slot`].
pub fn take<T>(slot: &Arc<Mutex<Option<T>>>) -> T {
    slot.lock().unwrap().take().expect("taken once")
}

/// A bus whose publishes take `delay` before they reach the inner bus, like a broker far away,
/// and fail once [`failing`](Self::failing) is set.
#[derive(Clone)]
pub struct SlowBus {
    inner: Arc<dyn psrpc::Bus>,
    delay: std::time::Duration,
    failing: Arc<AtomicBool>,
}

impl SlowBus {
    pub fn new(inner: impl psrpc::IntoBus, delay: std::time::Duration) -> Self {
        SlowBus {
            inner: inner.into_bus(),
            delay,
            failing: Arc::default(),
        }
    }

    /// From now on, publishes fail as if the broker went away.
    pub fn failing(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

impl psrpc::Bus for SlowBus {
    fn publish<'a>(
        &'a self,
        channel: &'a psrpc::Channel,
        payload: Bytes,
    ) -> futures::future::BoxFuture<'a, Result<(), psrpc::bus::BusError>> {
        Box::pin(async move {
            // A zero delay publishes on the first poll, as a fast broker client does.
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(psrpc::bus::BusError::Closed);
            }
            self.inner.publish(channel, payload).await
        })
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a psrpc::Channel,
        options: psrpc::bus::SubscribeOptions,
    ) -> futures::future::BoxFuture<'a, Result<psrpc::bus::Subscription, psrpc::bus::BusError>>
    {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.subscribe(channel, options).await
        })
    }

    fn name(&self) -> &'static str {
        "slow"
    }
}

/// A bus on which request-channel deliveries reach this subscriber `lag` late (a slow server),
/// while every other channel is on time.
pub struct LaggingBus {
    inner: Arc<dyn psrpc::Bus>,
    lag: std::time::Duration,
}

impl LaggingBus {
    pub fn new(inner: impl psrpc::IntoBus, lag: std::time::Duration) -> Self {
        LaggingBus {
            inner: inner.into_bus(),
            lag,
        }
    }
}

impl psrpc::Bus for LaggingBus {
    fn publish<'a>(
        &'a self,
        channel: &'a psrpc::Channel,
        payload: Bytes,
    ) -> futures::future::BoxFuture<'a, Result<(), psrpc::bus::BusError>> {
        self.inner.publish(channel, payload)
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a psrpc::Channel,
        options: psrpc::bus::SubscribeOptions,
    ) -> futures::future::BoxFuture<'a, Result<psrpc::bus::Subscription, psrpc::bus::BusError>>
    {
        Box::pin(async move {
            let mut inner = self.inner.subscribe(channel, options).await?;
            if channel.kind() != ChannelKind::Request {
                return Ok(inner);
            }
            let (sink, sub) = psrpc::bus::Subscription::new("lagging", options.capacity);
            let lag = self.lag;
            tokio::spawn(async move {
                while let Some(payload) = inner.recv().await {
                    tokio::time::sleep(lag).await;
                    let _ = sink.deliver(payload);
                }
            });
            Ok(sub)
        })
    }

    fn name(&self) -> &'static str {
        "lagging"
    }
}
