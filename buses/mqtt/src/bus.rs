//! [`MqttBus`]: the [`Bus`] implementation.
//!
//! Over 500 lines on purpose: it is one concept, the bus handle and its connection. The event
//! loop lives in `event.rs`/`event311.rs`, delivery in `router.rs`, TLS in `tls.rs`; what stays
//! (connecting with the MQTT 5 to 3.1.1 fallback, subscription bookkeeping, acknowledged
//! publishes) all works on the one `Inner` and would only be scattered by a split.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, NoReceivers, SubscribeOptions, Subscription};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::MqttClient;
use crate::router::{Entry, Router, SubState};
use crate::url::BrokerUrl;
use crate::{
    MQTT_MAX_PACKET, MQTT_MAX_PAYLOAD, MqttBusError, MqttBusOptions, MqttProtocol, PACKET_OVERHEAD,
    PUBLISH_FRAMING, SHARE_PREFIX, event, event311, mqtt_filter, mqtt_topic,
};

/// Counters of an [`MqttBus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttBusStats {
    /// Messages the broker sent to this bus.
    pub received: u64,
    /// Messages for subscriptions no local subscriber holds (any more).
    pub unroutable: u64,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// MQTT subscriptions (topic filters) this bus holds or is making.
    pub subscriptions: usize,
}

/// A psrpc bus over MQTT. Cloning gives another handle to the same bus (the same
/// connection); the connection closes when the last handle and subscription are gone.
///
/// See the [crate docs](crate) for the wire and the design.
///
/// ```no_run
/// use psrpc::{Channel, bus::{Bus, SubscribeOptions}};
/// use psrpc_mqtt::MqttBus;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = MqttBus::connect("mqtt://user:secret@127.0.0.1:1883").await?;
/// let ch = Channel::request("Svc", "Events", ["room1"], false);
/// let mut sub = bus.subscribe(&ch, SubscribeOptions::default()).await?;
/// bus.publish(&ch, bytes::Bytes::from_static(b"hello")).await?;
/// assert_eq!(sub.recv().await.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MqttBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: MqttClient,
    router: Arc<Router>,
    options: MqttBusOptions,
    client_id: String,
    next_member: AtomicU64,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
        // Subscriptions outliving the bus see the end of their stream.
        let mut shared = self.router.lock();
        for state in shared.subs.values() {
            state.entry.clear();
        }
        shared.subs.clear();
        shared.by_id.clear();
    }
}

impl std::fmt::Debug for MqttBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBus")
            .field("client_id", &self.inner.client_id)
            .field("mqtt5", &self.inner.client.is_v5())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl MqttBus {
    /// Connects to the broker at `url` (`mqtt://[user[:password]@]host[:port]`, or `mqtts://`
    /// with the `tls` feature) with default options.
    ///
    /// # Errors
    /// [`MqttBusError::InvalidUrl`]; [`MqttBusError::Connect`] when the broker cannot be
    /// reached or refuses the connection (one attempt: the bus needs a broker to start, only
    /// later losses are retried); [`MqttBusError::NoSharedSubscriptions`].
    pub async fn connect(url: &str) -> Result<Self, MqttBusError> {
        Self::connect_with(url, MqttBusOptions::default()).await
    }

    /// Connects to the broker at `url` with `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with(url: &str, options: MqttBusOptions) -> Result<Self, MqttBusError> {
        let url = BrokerUrl::parse(url)?;
        match options.protocol {
            MqttProtocol::V5 => Self::connect_v5(&url, options).await,
            MqttProtocol::V311 => Self::connect_v311(&url, options).await,
            MqttProtocol::Auto => match Self::connect_v5(&url, options.clone()).await {
                Err(err) if refuses_mqtt5(&err) => {
                    tracing::info!(%err, "the MQTT broker refused MQTT 5; trying MQTT 3.1.1");
                    Self::connect_v311(&url, options).await
                }
                other => other,
            },
        }
    }

    fn new_client_id() -> String {
        format!("psrpc-{:016x}", fastrand::u64(..))
    }

    async fn connect_v5(url: &BrokerUrl, options: MqttBusOptions) -> Result<Self, MqttBusError> {
        let mut mqtt = MqttOptions::new(Self::new_client_id(), url.host.clone(), url.port);
        if let Some((user, pass)) = &url.credentials {
            mqtt.set_credentials(user.clone(), pass.clone());
        }
        if url.tls {
            mqtt.set_transport(tls_transport(&options)?);
        }
        Self::from_mqtt_options(mqtt, options).await
    }

    async fn connect_v311(
        url: &BrokerUrl,
        mut options: MqttBusOptions,
    ) -> Result<Self, MqttBusError> {
        options.max_payload = options.max_payload.min(MQTT_MAX_PAYLOAD);
        options.keep_alive = options.keep_alive.max(Duration::from_secs(5));
        let mut mqtt = rumqttc::MqttOptions::new(Self::new_client_id(), url.host.clone(), url.port);
        if let Some((user, pass)) = &url.credentials {
            mqtt.set_credentials(user.clone(), pass.clone());
        }
        if url.tls {
            mqtt.set_transport(tls_transport(&options)?);
        }
        mqtt.set_clean_session(true)
            .set_keep_alive(options.keep_alive)
            .set_request_channel_capacity(options.request_capacity.max(1))
            .set_inflight(options.max_inflight.max(1))
            .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
        let client_id = mqtt.client_id();
        let (client, mut eventloop) =
            rumqttc::AsyncClient::new(mqtt, options.request_capacity.max(1));
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(options.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        let router = Arc::new(Router::default());
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(event311::run(
            eventloop,
            router.clone(),
            Some(first_tx),
            options.max_reconnect_delay,
        ));
        Self::start(
            MqttClient::V311(client),
            router,
            task,
            first_rx,
            options,
            client_id,
        )
        .await
    }

    /// A bus on rumqttc options of your own (transport, TLS, credentials, client ID, last
    /// will…). The bus sets clean start, the keepalive, the connection timeout, the request
    /// channel capacity and its Maximum Packet Size over yours, and the outgoing in-flight
    /// limit to [`MqttBusOptions::max_inflight`] unless yours sets one.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn from_mqtt_options(
        mut mqtt: MqttOptions,
        mut options: MqttBusOptions,
    ) -> Result<Self, MqttBusError> {
        options.max_payload = options.max_payload.min(MQTT_MAX_PAYLOAD);
        options.keep_alive = options.keep_alive.max(Duration::from_secs(5));
        mqtt.set_clean_start(true)
            .set_keep_alive(options.keep_alive)
            .set_connection_timeout(options.connect_timeout.as_secs().max(1))
            .set_request_channel_capacity(options.request_capacity.max(1))
            .set_max_packet_size(Some(u32::try_from(MQTT_MAX_PACKET).unwrap_or(u32::MAX)));
        if mqtt.get_outgoing_inflight_upper_limit().is_none() {
            mqtt.set_outgoing_inflight_upper_limit(options.max_inflight.max(1));
        }
        // Requests and replies are small writes; Nagle would hold one back for a delayed ACK.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        mqtt.set_network_options(network);
        let client_id = mqtt.client_id();
        let (client, eventloop) = AsyncClient::new(mqtt, options.request_capacity.max(1));
        let router = Arc::new(Router::default());
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(event::run(
            eventloop,
            router.clone(),
            Some(first_tx),
            options.max_reconnect_delay,
        ));
        Self::start(
            MqttClient::V5(client),
            router,
            task,
            first_rx,
            options,
            client_id,
        )
        .await
    }

    /// Waits for the first connection and probes for shared subscriptions.
    async fn start(
        client: MqttClient,
        router: Arc<Router>,
        task: JoinHandle<()>,
        first_rx: oneshot::Receiver<Result<Option<u8>, MqttBusError>>,
        options: MqttBusOptions,
        client_id: String,
    ) -> Result<Self, MqttBusError> {
        let bus = MqttBus {
            inner: Arc::new(Inner {
                client,
                router,
                options,
                client_id,
                next_member: AtomicU64::new(0),
                task,
            }),
        };
        let shared_subscriptions = match first_rx.await {
            Ok(Ok(shared)) => shared,
            Ok(Err(err)) => return Err(err),
            Err(_) => return Err(MqttBusError::Bus(BusError::Closed)),
        };
        if shared_subscriptions == Some(0) {
            return Err(MqttBusError::NoSharedSubscriptions(
                "the broker says so in its CONNACK".into(),
            ));
        }
        bus.probe_shared_subscriptions().await?;
        Ok(bus)
    }

    /// Go's check: a message published to a probe topic must arrive through a shared
    /// subscription of it.
    async fn probe_shared_subscriptions(&self) -> Result<(), MqttBusError> {
        let topic = format!("psrpc.probe/{}", self.inner.client_id);
        let mut sub = self
            .subscribe_filter(format!("{SHARE_PREFIX}{topic}"), true, 1)
            .await
            .map_err(|err| match err {
                BusError::Subscribe(err) => MqttBusError::NoSharedSubscriptions(err.to_string()),
                err => MqttBusError::Bus(err),
            })?;
        self.publish_topic(topic, Bytes::from_static(b"probe"))
            .await?;
        match tokio::time::timeout(self.inner.options.operation_timeout, sub.recv()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(MqttBusError::Bus(BusError::Closed)),
            Err(_) => Err(MqttBusError::NoSharedSubscriptions(
                "a message published to a shared subscription's topic did not arrive".into(),
            )),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &MqttBusOptions {
        &self.inner.options
    }

    /// The protocol the connection speaks: [`MqttProtocol::V5`] or [`MqttProtocol::V311`].
    pub fn protocol(&self) -> MqttProtocol {
        if self.inner.client.is_v5() {
            MqttProtocol::V5
        } else {
            MqttProtocol::V311
        }
    }

    /// The MQTT client ID of the bus's connection.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> MqttBusStats {
        let c = &self.inner.router.counters;
        MqttBusStats {
            received: c.received.load(Ordering::Relaxed),
            unroutable: c.unroutable.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            subscriptions: self.inner.router.lock().subs.len(),
        }
    }

    /// True while the connection to the broker is up.
    pub fn is_connected(&self) -> bool {
        self.inner.router.connected.load(Ordering::Acquire)
    }

    fn check_size(&self, topic: &str, payload: &Bytes) -> Result<(), BusError> {
        if topic.len() > usize::from(u16::MAX) {
            return Err(BusError::Publish(
                format!("MQTT topic of {} bytes is too long", topic.len()).into(),
            ));
        }
        psrpc::bus::check_payload_size(payload.len(), self.max_payload())?;
        // Exact for long topics: rumqttc drops the connection on a packet over the limit.
        let broker = self.inner.router.broker_max_packet.load(Ordering::Relaxed);
        let packet_limit = broker.min(MQTT_MAX_PACKET);
        psrpc::bus::check_payload_size(
            payload.len(),
            packet_limit.saturating_sub(topic.len() + PUBLISH_FRAMING),
        )
    }

    fn not_connected() -> BusError {
        BusError::Connection("not connected to the MQTT broker".into())
    }

    /// A QoS 0 publish, queued to the connection.
    async fn publish_topic(&self, topic: String, payload: Bytes) -> Result<(), BusError> {
        self.check_size(&topic, &payload)?;
        if !self.is_connected() {
            return Err(Self::not_connected());
        }
        self.inner
            .client
            .publish_qos0(topic, payload)
            .await
            .map_err(|_| BusError::Closed)
    }

    /// A QoS 1 publish whose PUBACK the returned receiver gets.
    async fn publish_acked(
        &self,
        topic: String,
        payload: Bytes,
    ) -> Result<oneshot::Receiver<Result<PubAckReason, BusError>>, BusError> {
        self.check_size(&topic, &payload)?;
        let deadline = Instant::now() + self.inner.options.operation_timeout;
        loop {
            {
                let mut shared = self.inner.router.lock();
                if !shared.connected {
                    return Err(Self::not_connected());
                }
                // Queued under the lock, so the FIFO order matches rumqttc's (see `Shared`).
                match self
                    .inner
                    .client
                    .try_publish_qos1(topic.as_str(), payload.clone())
                {
                    Ok(()) => {
                        let (tx, rx) = oneshot::channel();
                        shared.pub_fifo.push_back(tx);
                        return Ok(rx);
                    }
                    Err(_) if self.inner.task.is_finished() => return Err(BusError::Closed),
                    Err(_) => {}
                }
            }
            // rumqttc's request channel is full: wait for room.
            if Instant::now() >= deadline {
                return Err(BusError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Subscribes `filter` for a local subscriber and waits until the broker has it.
    async fn subscribe_filter(
        &self,
        filter: String,
        queue: bool,
        capacity: usize,
    ) -> Result<Subscription, BusError> {
        let inner = &self.inner;
        let (sink, sub) = Subscription::new(filter.as_str(), capacity);
        let member = inner.next_member.fetch_add(1, Ordering::Relaxed);
        let (guard, mut waiter) = {
            let mut shared = inner.router.lock();
            if !shared.subs.contains_key(&filter) {
                let sub_id = shared.new_sub_id();
                let entry = Arc::new(Entry::new(filter.clone(), sub_id, queue));
                shared.by_id.insert(sub_id, entry.clone());
                shared.subs.insert(
                    filter.clone(),
                    SubState {
                        entry,
                        live: false,
                        sent: false,
                        waiters: Vec::new(),
                    },
                );
            }
            let Some(state) = shared.subs.get_mut(&filter) else {
                return Err(BusError::Closed);
            };
            state.entry.add(member, sink);
            // Created before waiting, so a cancelled or failed subscribe cleans up.
            let guard = Unsubscribe {
                bus: inner.clone(),
                entry: state.entry.clone(),
                member,
            };
            if state.live {
                return Ok(sub.with_guard(guard));
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push(tx);
            (guard, rx)
        };
        let deadline = Instant::now() + inner.options.operation_timeout;
        loop {
            if self.ensure_subscribe_sent(&filter) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(BusError::Timeout);
            }
            // rumqttc's request channel is full: wait for room.
            tokio::select! {
                outcome = &mut waiter => return self.subscribed(outcome, sub, guard),
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        match tokio::time::timeout_at(deadline, waiter).await {
            Ok(outcome) => self.subscribed(outcome, sub, guard),
            Err(_) => Err(BusError::Timeout),
        }
    }

    fn subscribed(
        &self,
        outcome: Result<Result<(), BusError>, oneshot::error::RecvError>,
        sub: Subscription,
        guard: Unsubscribe,
    ) -> Result<Subscription, BusError> {
        match outcome {
            Ok(Ok(())) => Ok(sub.with_guard(guard)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(BusError::Closed),
        }
    }

    /// Queues the SUBSCRIBE of `filter` unless it is live, already queued, or the connection is
    /// down (the reconnect sends it then). False only when rumqttc's channel is full.
    fn ensure_subscribe_sent(&self, filter: &str) -> bool {
        let mut shared = self.inner.router.lock();
        if !shared.connected {
            return true;
        }
        let Some(state) = shared.subs.get(filter) else {
            return true;
        };
        if state.live || state.sent {
            return true;
        }
        let sub_id = state.entry.sub_id;
        if self.inner.client.try_subscribe(filter, sub_id).is_err() {
            return false;
        }
        shared.sub_fifo.push_back((filter.to_string(), sub_id));
        if let Some(state) = shared.subs.get_mut(filter) {
            state.sent = true;
        }
        true
    }
}

impl Bus for MqttBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.publish_topic(mqtt_topic(channel), payload))
    }

    /// With [`MqttBusOptions::watch_unserved`], a QoS 1 publish whose PUBACK reason "No
    /// matching subscribers" resolves the returned [`NoReceivers`].
    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        Box::pin(async move {
            let topic = mqtt_topic(channel);
            // MQTT 3.1.1 PUBACKs carry no reason: nothing to watch.
            if !self.inner.options.watch_unserved || !self.inner.client.is_v5() {
                self.publish_topic(topic, payload).await?;
                return Ok(NoReceivers::unknown());
            }
            let ack = self.publish_acked(topic, payload).await?;
            Ok(NoReceivers::later(async move {
                match ack.await {
                    Ok(Ok(PubAckReason::NoMatchingSubscribers)) => {}
                    Ok(Ok(PubAckReason::Success)) | Ok(Err(_)) | Err(_) => {
                        futures::future::pending::<()>().await;
                    }
                    Ok(Ok(reason)) => {
                        tracing::warn!(?reason, "MQTT broker refused a publish");
                        futures::future::pending::<()>().await;
                    }
                }
            }))
        })
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(self.subscribe_filter(mqtt_filter(channel), channel.is_queue(), options.capacity))
    }

    /// A QoS 1 barrier: an empty publish to `psrpc.flush/<client id>`, resolved by its PUBACK,
    /// which the broker sends after handling everything this connection sent before.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let topic = format!("psrpc.flush/{}", self.inner.client_id);
            let ack = self.publish_acked(topic, Bytes::new()).await?;
            match tokio::time::timeout(self.inner.options.operation_timeout, ack).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err(err))) => Err(err),
                Ok(Err(_)) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout),
            }
        })
    }

    /// [`MqttBusOptions::max_payload`], lowered to fit the broker's Maximum Packet Size.
    fn max_payload(&self) -> usize {
        let broker = self.inner.router.broker_max_packet.load(Ordering::Relaxed);
        self.inner
            .options
            .max_payload
            .min(broker.saturating_sub(PACKET_OVERHEAD))
    }

    fn name(&self) -> &'static str {
        "mqtt"
    }
}

/// Removes one local subscriber when its [`Subscription`] goes; the last one of a filter
/// unsubscribes it at the broker.
struct Unsubscribe {
    // Strong: a subscription keeps its bus (and its connection) alive, per the Bus contract.
    bus: Arc<Inner>,
    entry: Arc<Entry>,
    member: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if !self.entry.remove(self.member) {
            return;
        }
        let mut shared = self.bus.router.lock();
        let filter = &self.entry.filter;
        let current = shared
            .subs
            .get(filter)
            .is_some_and(|s| Arc::ptr_eq(&s.entry, &self.entry));
        // A new subscriber may have joined since (under the lock we now hold).
        if !current || !self.entry.is_empty() {
            return;
        }
        shared.subs.remove(filter);
        shared.by_id.remove(&self.entry.sub_id);
        if shared.connected
            && let Err(err) = self.bus.client.try_unsubscribe(filter.as_str())
        {
            // The broker keeps sending; those messages are counted as unroutable.
            tracing::warn!(%filter, err = %err.0, "MQTT UNSUBSCRIBE could not be queued");
        }
    }
}

/// True when the broker was reached but would not speak MQTT 5 with us: it refused the
/// protocol version, answered in a form MQTT 5 cannot read (a 3.1.1 CONNACK), or hung up on
/// the CONNECT. A broker that cannot be reached, or refuses our credentials, is not.
fn refuses_mqtt5(err: &MqttBusError) -> bool {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
    use rumqttc::v5::{ConnectionError, StateError};
    match err {
        MqttBusError::Connect(ConnectionError::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion
            | ConnectReturnCode::RefusedProtocolVersion,
        )) => true,
        MqttBusError::Connect(ConnectionError::MqttState(StateError::Deserialization(_))) => true,
        MqttBusError::Connect(ConnectionError::Io(err)) => matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

#[cfg(feature = "tls")]
fn tls_transport(options: &MqttBusOptions) -> Result<rumqttc::Transport, MqttBusError> {
    let config = match &options.tls {
        Some(config) => config.clone(),
        None => crate::tls::default_config()?,
    };
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(config),
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_transport(_options: &MqttBusOptions) -> Result<rumqttc::Transport, MqttBusError> {
    Err(MqttBusError::TlsUnavailable)
}
