//! A bus wrapper that puts every channel under a namespace.
//!
//! Written once here rather than as an option of each bus: every bus spells its names from
//! [`Channel`], so moving the channel into the namespace before the bus sees it covers the
//! in-process bus, NATS, Redis, MQTT, AMQP and any bus a user writes, with one sanitiser and
//! one test.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Bus, BusError, IntoBus, NoReceivers, SubscribeOptions, Subscription};
use crate::Channel;
use crate::channel::{InvalidNamespace, Namespace};

/// Wraps a bus so that all its channels live in a [`Namespace`]: deployments (staging,
/// production, tenants) sharing one broker never see each other's calls, claims, streams or
/// subscriptions. Without the wrapper channel names are exactly Go psrpc's; with it, only peers
/// in the same namespace (Rust peers using this wrapper) are reachable.
///
/// Wrapping twice nests the namespaces (outer first). Buses that keep per-message state of
/// their own at the broker key it by namespace too (the Redis queue lock keys).
///
/// ```
/// use psrpc::bus::{LocalBus, Namespaced};
/// use psrpc::{Client, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = LocalBus::new();
/// let staging = Namespaced::new(broker.clone(), "staging")?;
/// let production = Namespaced::new(broker, "production")?;
/// // A server in staging is invisible to a client in production.
/// let server = Server::new("Greeter", staging);
/// let client = Client::new("Greeter", production).await?;
/// # let _ = (server, client);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Namespaced {
    inner: Arc<dyn Bus>,
    namespace: Namespace,
}

impl std::fmt::Debug for Namespaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespaced")
            .field("inner", &self.inner.name())
            .field("namespace", &self.namespace.as_str())
            .finish()
    }
}

impl Namespaced {
    /// Wraps `inner` in the namespace `name` (sanitised like a topic).
    ///
    /// # Errors
    /// [`InvalidNamespace`] when `name` is empty.
    pub fn new(inner: impl IntoBus, name: &str) -> Result<Self, InvalidNamespace> {
        Ok(Self::with_namespace(inner, Namespace::new(name)?))
    }

    /// Wraps `inner` in `namespace`.
    pub fn with_namespace(inner: impl IntoBus, namespace: Namespace) -> Self {
        Namespaced {
            inner: inner.into_bus(),
            namespace,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    fn scope(&self, channel: &Channel) -> Channel {
        channel.clone().in_namespace(&self.namespace)
    }
}

impl Bus for Namespaced {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        let channel = self.scope(channel);
        Box::pin(async move { self.inner.publish(&channel, payload).await })
    }

    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        let channel = self.scope(channel);
        Box::pin(async move { self.inner.publish_watched(&channel, payload).await })
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        let channel = self.scope(channel);
        Box::pin(async move { self.inner.subscribe(&channel, options).await })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.flush()
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;
    use futures::FutureExt as _;

    #[tokio::test]
    async fn namespaces_on_one_bus_do_not_meet() {
        let broker = LocalBus::new();
        let a = Namespaced::new(broker.clone(), "a").unwrap();
        let b = Namespaced::new(broker.clone(), "b").unwrap();
        let ch = Channel::request("Svc", "M", ["t"], false);
        let mut in_a = a.subscribe(&ch, SubscribeOptions::default()).await.unwrap();
        let mut plain = broker
            .subscribe(&ch, SubscribeOptions::default())
            .await
            .unwrap();
        b.publish(&ch, Bytes::from_static(b"from b")).await.unwrap();
        broker
            .publish(&ch, Bytes::from_static(b"plain"))
            .await
            .unwrap();
        a.publish(&ch, Bytes::from_static(b"from a")).await.unwrap();
        assert_eq!(in_a.recv().await.as_deref(), Some(&b"from a"[..]));
        assert_eq!(plain.recv().await.as_deref(), Some(&b"plain"[..]));
        // LocalBus delivers inside publish: anything else would be buffered by now.
        assert!(in_a.recv().now_or_never().is_none());
        assert!(plain.recv().now_or_never().is_none());
    }
}
