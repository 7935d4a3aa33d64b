//! The brokers of a run and the buses made on them.

use std::sync::Arc;

use psrpc::Bus;
use psrpc::bus::LocalBus;
use psrpc_amqp::AmqpBus;
use psrpc_mqtt::MqttBus;
use psrpc_nats::NatsBus;
use psrpc_redis::RedisBus;
use psrpc_testkit::{MosquittoServer, NatsServer, RabbitMqServer, RedisServer};

use crate::harness::Result;

/// Which bus a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    /// The in-process bus.
    Local,
    /// NATS.
    Nats,
    /// Redis.
    Redis,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
    /// MQTT (mosquitto).
    Mqtt,
}

impl BusKind {
    /// Every kind, in the order they run.
    pub const ALL: [BusKind; 5] = [
        BusKind::Local,
        BusKind::Nats,
        BusKind::Redis,
        BusKind::Mqtt,
        BusKind::Amqp,
    ];

    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            BusKind::Local => "local",
            BusKind::Nats => "nats",
            BusKind::Redis => "redis",
            BusKind::Amqp => "amqp",
            BusKind::Mqtt => "mqtt",
        }
    }
}

/// The brokers of the run: given by URL, or started through the test kit (and stopped on drop).
pub struct Brokers {
    nats_url: Option<String>,
    redis_url: Option<String>,
    _nats: Option<NatsServer>,
    _redis: Option<RedisServer>,
    amqp_url: Option<String>,
    _amqp: Option<RabbitMqServer>,
    mqtt_url: Option<String>,
    _mqtt: Option<MosquittoServer>,
}

impl Brokers {
    /// Uses the URLs given and starts what is missing among the brokers `wanted`.
    ///
    /// # Errors
    /// A broker that cannot be started (not installed, not ready).
    pub fn start(
        nats_url: Option<String>,
        redis_url: Option<String>,
        mqtt_url: Option<String>,
        wanted: &[BusKind],
    ) -> Result<Self> {
        let mut brokers = Brokers {
            nats_url,
            redis_url,
            _nats: None,
            _redis: None,
            amqp_url: None,
            _amqp: None,
            mqtt_url,
            _mqtt: None,
        };
        if wanted.contains(&BusKind::Nats) && brokers.nats_url.is_none() {
            let server = NatsServer::start()?;
            brokers.nats_url = Some(server.url());
            brokers._nats = Some(server);
        }
        if wanted.contains(&BusKind::Redis) && brokers.redis_url.is_none() {
            let server = RedisServer::start()?;
            brokers.redis_url = Some(server.url());
            brokers._redis = Some(server);
        }
        if wanted.contains(&BusKind::Mqtt) && brokers.mqtt_url.is_none() {
            let server = MosquittoServer::start()?;
            brokers.mqtt_url = Some(server.url());
            brokers._mqtt = Some(server);
        }
        Ok(brokers)
    }

    /// Uses the AMQP URL given, or starts a RabbitMQ node if AMQP is `wanted`.
    ///
    /// # Errors
    /// A node that cannot be started.
    pub fn with_amqp(mut self, url: Option<String>, wanted: &[BusKind]) -> Result<Self> {
        self.amqp_url = url;
        if wanted.contains(&BusKind::Amqp) && self.amqp_url.is_none() {
            let server = RabbitMqServer::start()?;
            self.amqp_url = Some(server.url());
            self._amqp = Some(server);
        }
        Ok(self)
    }

    /// The AMQP URL.
    ///
    /// # Errors
    /// When no AMQP broker is part of this run.
    pub fn amqp_url(&self) -> Result<&str> {
        self.amqp_url
            .as_deref()
            .ok_or_else(|| "no AMQP broker".into())
    }

    /// The NATS URL.
    ///
    /// # Errors
    /// When no NATS broker is part of this run.
    pub fn nats_url(&self) -> Result<&str> {
        self.nats_url
            .as_deref()
            .ok_or_else(|| "no NATS broker".into())
    }

    /// The Redis URL.
    ///
    /// # Errors
    /// When no Redis broker is part of this run.
    pub fn redis_url(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .ok_or_else(|| "no Redis broker".into())
    }

    /// The MQTT URL.
    ///
    /// # Errors
    /// When no MQTT broker is part of this run.
    pub fn mqtt_url(&self) -> Result<&str> {
        self.mqtt_url
            .as_deref()
            .ok_or_else(|| "no MQTT broker".into())
    }

    /// Process IDs of the brokers this run started.
    pub fn started_pids(&self) -> Vec<u32> {
        let nats = self._nats.as_ref().and_then(NatsServer::pid);
        let redis = self._redis.as_ref().and_then(RedisServer::pid);
        let mqtt = self._mqtt.as_ref().and_then(MosquittoServer::pid);
        nats.into_iter().chain(redis).chain(mqtt).collect()
    }

    /// Where the brokers are, for the log.
    pub fn describe(&self) -> String {
        format!(
            "nats={} redis={} mqtt={} amqp={}",
            self.nats_url.as_deref().unwrap_or("-"),
            self.redis_url.as_deref().unwrap_or("-"),
            self.mqtt_url.as_deref().unwrap_or("-"),
            self.amqp_url.as_deref().unwrap_or("-")
        )
    }
}

/// Makes the buses of one scenario. Each call to [`Fabric::bus`] on a broker is a connection
/// of its own, as a separate process would have; the in-process bus is shared, as in one
/// process.
pub struct Fabric<'a> {
    /// The bus kind.
    pub kind: BusKind,
    brokers: &'a Brokers,
    local: LocalBus,
}

impl<'a> Fabric<'a> {
    /// A fabric for one scenario (a fresh in-process bus).
    pub fn new(kind: BusKind, brokers: &'a Brokers) -> Self {
        Fabric {
            kind,
            brokers,
            local: LocalBus::new(),
        }
    }

    /// A bus: a new broker connection, or the scenario's in-process bus.
    ///
    /// # Errors
    /// A failed connection.
    pub async fn bus(&self) -> Result<Arc<dyn Bus>> {
        Ok(match self.kind {
            BusKind::Local => Arc::new(self.local.clone()),
            BusKind::Nats => Arc::new(NatsBus::connect(self.brokers.nats_url()?).await?),
            BusKind::Redis => Arc::new(RedisBus::connect(self.brokers.redis_url()?).await?),
            BusKind::Amqp => Arc::new(AmqpBus::connect(self.brokers.amqp_url()?).await?),
            BusKind::Mqtt => Arc::new(MqttBus::connect(self.brokers.mqtt_url()?).await?),
        })
    }

    /// The scenario's in-process bus (the raw transport of the `local` kind).
    pub fn local(&self) -> &LocalBus {
        &self.local
    }

    /// The brokers.
    pub fn brokers(&self) -> &Brokers {
        self.brokers
    }
}
