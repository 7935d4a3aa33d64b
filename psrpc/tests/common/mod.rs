//! Helpers shared by the runtime tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::bus::{Bus, BusError, LocalBus, SubscribeOptions, Subscription};
use psrpc::channel::ChannelKind;
use psrpc::{Channel, wire};

/// A real in-process bus that also records every publish, to assert what went on the wire.
#[derive(Clone, Default)]
pub struct RecordingBus {
    inner: LocalBus,
    log: Arc<Mutex<Vec<(Channel, Bytes)>>>,
}

impl RecordingBus {
    pub fn new(inner: LocalBus) -> Self {
        RecordingBus {
            inner,
            log: Arc::default(),
        }
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

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

impl Bus for RecordingBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.log
            .lock()
            .unwrap()
            .push((channel.clone(), payload.clone()));
        self.inner.publish(channel, payload)
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.inner.subscribe(channel, options)
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn name(&self) -> &'static str {
        "recording"
    }
}

/// A real in-process bus whose publishes can be cut, as if this node's network went away.
#[derive(Clone, Default)]
pub struct CuttableBus {
    inner: LocalBus,
    cut: Arc<AtomicBool>,
}

impl CuttableBus {
    pub fn new(inner: LocalBus) -> Self {
        CuttableBus {
            inner,
            cut: Arc::default(),
        }
    }

    /// From now on, publishes vanish.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl Bus for CuttableBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        if self.cut.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.inner.publish(channel, payload)
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.inner.subscribe(channel, options)
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn name(&self) -> &'static str {
        "cuttable"
    }
}
