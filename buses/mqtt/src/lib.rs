//! The MQTT bus for psrpc, wire-compatible with Go psrpc's MQTT bus.
//!
//! [`MqttBus`] implements [`psrpc::Bus`] over an MQTT broker with [rumqttc]. The wire is Go's:
//!
//! - **Topics**: a channel's pipe spelling ([`Channel::pipe_name`], `Svc|Method|topic|REQ`) with
//!   every `|` replaced by `/` and every `+` by `-` ([`mqtt_topic`]), e.g. `Svc/Method/REQ`.
//!   psrpc sanitises every part of a channel name to `[0-9A-Za-z_]` plus `u+XXXX` escapes, so a
//!   topic never contains MQTT's special characters (`#`, `+`, `$`) and a user part never
//!   contains `/`: no user-chosen topic can address another channel (nor a wildcard).
//! - **Payloads** are the psrpc envelopes as given (no route key in `Msg.channel`, as on Redis),
//!   published with QoS 0 and no retain flag.
//! - **Fan-out** subscribers subscribe the topic; **queue** subscribers the shared subscription
//!   `$share/psrpc/<topic>`, so the broker hands each message to one member of the group
//!   across all processes, Go's included.
//!
//! # Protocol
//!
//! The bus speaks MQTT 5 where the broker does, and MQTT 3.1.1 (Go psrpc's version) where it
//! does not or when asked ([`MqttBusOptions::protocol`], [`MqttProtocol`]); topics and payloads
//! are the same either way, so peers of both versions share a broker. MQTT 5 gives what 3.1.1
//! cannot:
//!
//! - **Fast failure for unserved calls.** [`Bus::publish_watched`] (which the runtime uses for
//!   requests) publishes with QoS 1, and a broker reports "No matching subscribers" (reason
//!   0x10) in its PUBACK when nobody subscribes to the topic, so a call to a method nobody
//!   serves fails at once. Subscribers still receive the message at QoS 0 (the QoS of their
//!   subscription): Go peers see nothing new. Turn it off with
//!   [`MqttBusOptions::watch_unserved`].
//! - **Subscription identifiers** tell which of our subscriptions a message came through, so a
//!   bus holding both the fan-out and the shared subscription of a topic gives each copy the
//!   broker sends to the right local subscribers (a broker without them is handled by topic
//!   name, which can deliver a queue message twice in that one case).
//! - **The broker's Maximum Packet Size** (CONNACK) bounds [`Bus::max_payload`].
//!
//! A broker without shared subscriptions is refused at connect
//! ([`MqttBusError::NoSharedSubscriptions`]), as Go does: the bus subscribes
//! `$share/psrpc/psrpc.probe/<client id>` and publishes to it, and fails when nothing arrives.
//!
//! # Design
//!
//! - **One connection per bus** (clean start, a random client ID). A task drives rumqttc's
//!   event loop and demultiplexes incoming messages, by subscription identifier, into the bounded
//!   buffers of the local subscriptions: several local subscribers of a topic share one MQTT
//!   subscription and each gets every message; local queue members of a shared subscription get
//!   each message the broker hands this connection in turn (round robin). Delivery never waits:
//!   a full buffer drops the message and counts it (see
//!   [`psrpc::bus::SubscriptionSink::deliver`]). The MQTT subscription is removed when its
//!   last local subscriber goes.
//! - [`Bus::subscribe`] returns once the broker acknowledged the SUBSCRIBE (SUBACK).
//! - **Publishes** are queued to rumqttc's request channel; [`Bus::flush`] publishes a QoS 1
//!   barrier (an empty message to `psrpc.flush/<client id>`, a topic no psrpc channel can
//!   spell) and resolves on its PUBACK: the broker handles a connection's packets in order, so
//!   everything published before has then reached it.
//! - **Reconnects**: after a lost connection the task reconnects (backing off up to
//!   [`MqttBusOptions::max_reconnect_delay`]) and subscribes every filter again before
//!   anything else is sent. While disconnected, publishes fail at once with
//!   [`BusError::Connection`]; messages in flight when the connection broke are lost (QoS 0,
//!   at most once), and psrpc calls then end by their deadline, as with Go.
//! - **Cancel safety**: every async method is cancel safe. A dropped `subscribe` removes its
//!   local subscriber (and the MQTT subscription when it was the last); a dropped `publish` has
//!   either queued the message or not; a dropped `flush` leaves its barrier to go out unheard; a
//!   dropped `connect` closes the connection it opened.
//!
//! # Limits
//!
//! - On MQTT 3.1.1 the bus has none of the MQTT 5 additions above. The shared-subscription
//!   probe also needs the right to subscribe and
//!   publish to `psrpc.probe/…`; a broker ACL that forbids it makes connect fail as if shared
//!   subscriptions were missing.
//! - rumqttc assigns packet IDs in a cycle of the broker's Receive Maximum, publishes and
//!   subscribes alike, so more SUBSCRIBEs in flight than that (hundreds of concurrent
//!   registrations, or a resubscription after a reconnect) reuse IDs. Mosquitto answers each in
//!   turn and the bus pairs them correctly; a broker that enforces unique IDs would refuse such a
//!   SUBSCRIBE, which then fails with an error rather than silently.
//!
//! ```no_run
//! use psrpc::{Client, MethodInfo, Server};
//! use psrpc_mqtt::MqttBus;
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = MqttBus::connect("mqtt://127.0.0.1:1883").await?;
//! let server = Server::new("Greeter", bus.clone());
//! server
//!     .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(format!("hi {req}")) })
//!     .await?;
//! let client = Client::new("Greeter", bus).await?;
//! let reply: String = client.request(ECHO, &[], &"bob".to_string(), Default::default()).await?;
//! assert_eq!(reply, "hi bob");
//! # Ok(())
//! # }
//! ```

mod bus;
mod client;
mod error;
mod event;
mod event311;
mod router;
#[cfg(feature = "tls")]
mod tls;
mod url;

use std::time::Duration;

pub use bus::{MqttBus, MqttBusStats};
pub use error::MqttBusError;

use psrpc::Channel;
#[cfg(doc)]
use psrpc::bus::{Bus, BusError};

/// The largest payload MQTT can carry in one packet: the 256 MiB packet limit less
/// [`PACKET_OVERHEAD`].
pub const MQTT_MAX_PAYLOAD: usize = MQTT_MAX_PACKET - PACKET_OVERHEAD;

/// The largest MQTT packet: a 4-byte remaining length (268,435,455) plus the fixed header.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Room kept in a packet for everything but the payload when [`Bus::max_payload`](psrpc::Bus)
/// is computed: the fixed header, properties and a topic of up to ~1000 bytes. A publish with
/// a longer topic is checked against the exact packet size.
pub const PACKET_OVERHEAD: usize = 1024;

/// Bytes of a QoS 1 PUBLISH besides its topic and payload: fixed header (at most 5), topic
/// length (2), packet ID (2), properties length (1).
const PUBLISH_FRAMING: usize = 10;

/// The prefix of queue subscriptions: Go psrpc's shared-subscription group `psrpc`.
pub const SHARE_PREFIX: &str = "$share/psrpc/";

/// The MQTT topic of a channel: its pipe spelling with `|` → `/` and `+` → `-` (Go's rule).
///
/// ```
/// use psrpc::Channel;
///
/// let ch = Channel::request("Svc", "Method", ["eu-west"], true);
/// assert_eq!(psrpc_mqtt::mqtt_topic(&ch), "Svc/Method/euu-002dwest/REQ");
/// ```
pub fn mqtt_topic(channel: &Channel) -> String {
    channel
        .pipe_name()
        .chars()
        .map(|c| match c {
            '|' => '/',
            '+' => '-',
            c => c,
        })
        .collect()
}

/// The MQTT subscription filter of a channel: the topic, or `$share/psrpc/<topic>` for queue
/// channels.
///
/// ```
/// use psrpc::Channel;
///
/// let ch = Channel::request("Svc", "Method", ["a"], true);
/// assert_eq!(psrpc_mqtt::mqtt_filter(&ch), "$share/psrpc/Svc/Method/a/REQ");
/// ```
pub fn mqtt_filter(channel: &Channel) -> String {
    let topic = mqtt_topic(channel);
    if channel.is_queue() {
        format!("{SHARE_PREFIX}{topic}")
    } else {
        topic
    }
}

/// The MQTT protocol version a bus speaks. Go psrpc speaks 3.1.1; both share a broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttProtocol {
    /// MQTT 5, falling back to 3.1.1 when the broker refuses 5 (it answers the CONNECT with
    /// "unsupported protocol version", in a form MQTT 5 cannot read, or hangs up on it).
    #[default]
    Auto,
    /// MQTT 5 only.
    V5,
    /// MQTT 3.1.1 only, as Go psrpc. Without MQTT 5 the bus has no fast failure for unserved
    /// calls, no subscription identifiers (a bus holding both the fan-out and the shared
    /// subscription of one topic gets a queue message through both), and no broker packet
    /// limit from the CONNACK.
    V311,
}

/// Options of an [`MqttBus`].
///
/// ```
/// use std::time::Duration;
/// let options = psrpc_mqtt::MqttBusOptions::default()
///     .max_payload(8 << 20)
///     .operation_timeout(Duration::from_secs(10));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MqttBusOptions {
    /// The largest payload accepted, in bytes (default and cap [`MQTT_MAX_PAYLOAD`]; the
    /// broker's Maximum Packet Size lowers it further). Set it to the broker's
    /// `message_size_limit` when one is configured: MQTT 5 brokers do not announce that one.
    pub max_payload: usize,
    /// Interval of the keepalive PINGREQ, which also detects a dead connection while idle
    /// (default 10 s, at least 5 s).
    pub keep_alive: Duration,
    /// How long a connection attempt may take (default 5 s, whole seconds).
    pub connect_timeout: Duration,
    /// How long a SUBSCRIBE may wait for its SUBACK and a flush for its PUBACK (default 5 s).
    pub operation_timeout: Duration,
    /// Longest pause between reconnection attempts (default 1 s).
    pub max_reconnect_delay: Duration,
    /// Publish requests with QoS 1 so the broker's PUBACK tells when nobody subscribes (see
    /// the [crate docs](crate)); default true. Off, every publish is QoS 0 as in Go.
    pub watch_unserved: bool,
    /// Capacity of rumqttc's request channel (default 1024): a QoS 0 publish waits for room.
    pub request_capacity: usize,
    /// Most QoS 1 publishes awaiting their PUBACK at once (default 256; the broker's Receive
    /// Maximum lowers it further). rumqttc keeps a slot of about 200 bytes for each one from
    /// the start, so its own default of 65,535 would cost 14 MiB per connection.
    pub max_inflight: u16,
    /// The protocol version (default [`MqttProtocol::Auto`]: MQTT 5, or 3.1.1 when the broker
    /// refuses 5). Used by [`MqttBus::connect_with`]; [`MqttBus::from_mqtt_options`] is MQTT 5.
    pub protocol: MqttProtocol,
    /// The TLS client configuration for `mqtts://` URLs (default: the platform's root
    /// certificates, no client certificate).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl MqttBusOptions {
    /// Sets [`max_payload`](Self::max_payload).
    pub fn max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets [`operation_timeout`](Self::operation_timeout).
    pub fn operation_timeout(mut self, operation_timeout: Duration) -> Self {
        self.operation_timeout = operation_timeout;
        self
    }

    /// Sets [`max_reconnect_delay`](Self::max_reconnect_delay).
    pub fn max_reconnect_delay(mut self, max_reconnect_delay: Duration) -> Self {
        self.max_reconnect_delay = max_reconnect_delay;
        self
    }

    /// Sets [`watch_unserved`](Self::watch_unserved).
    pub fn watch_unserved(mut self, watch_unserved: bool) -> Self {
        self.watch_unserved = watch_unserved;
        self
    }

    /// Sets [`request_capacity`](Self::request_capacity).
    pub fn request_capacity(mut self, request_capacity: usize) -> Self {
        self.request_capacity = request_capacity;
        self
    }

    /// Sets [`max_inflight`](Self::max_inflight) (at least 1).
    pub fn max_inflight(mut self, max_inflight: u16) -> Self {
        self.max_inflight = max_inflight.max(1);
        self
    }

    /// Sets [`protocol`](Self::protocol).
    pub fn protocol(mut self, protocol: MqttProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets [`tls`](Self::tls).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }
}

impl Default for MqttBusOptions {
    fn default() -> Self {
        MqttBusOptions {
            max_payload: MQTT_MAX_PAYLOAD,
            keep_alive: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(1),
            watch_unserved: true,
            request_capacity: 1024,
            max_inflight: 256,
            protocol: MqttProtocol::Auto,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
