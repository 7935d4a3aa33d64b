//! Helpers shared by the runtime tests.
#![allow(dead_code)]

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
