//! The server side of discovery: a server's announcer task and what it announces.
//!
//! The task starts with the server's first registration: it announces the server (hello),
//! repeats it every heartbeat, answers queries, announces again when registrations or health
//! change, and says goodbye when the server stops. A server whose runtime dies says nothing;
//! clients drop it when its heartbeats stop.

use crate::sync::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::stats::{CallTimer, MethodTable};
use super::wire::{
    ANNOUNCEMENT_TYPE_URL, Announcement, AnnouncementKind, HealthStatus, QUERY_TYPE_URL, Query,
    RegistrationInfo, ServerInfo, StatsSnapshot,
};
use super::{DiscoveryOptions, presence_channel, query_channel};
use crate::bus::{Bus, SubscribeOptions};
use crate::{MethodInfo, wire};

/// How long the goodbye may take: a broker that went away cannot hold a shutdown.
const GOODBYE_BOUND: Duration = Duration::from_secs(2);

/// What the announcer reads of its server at each announcement: (received, handled,
/// malformed, shed, in flight). `None` once the server is gone.
pub(crate) type Snapshot = Arc<dyn Fn() -> Option<[u64; 5]> + Send + Sync>;

/// A server's discovery state: health, per-method counters, the announcer.
pub(crate) struct Presence {
    options: DiscoveryOptions,
    health: watch::Sender<HealthStatus>,
    methods: Arc<MethodTable>,
    shared: Arc<Shared>,
}

struct Shared {
    registrations: Mutex<Vec<RegistrationInfo>>,
    changed: Notify,
    stop: CancellationToken,
    started: std::sync::atomic::AtomicBool,
    finished: tokio_util::task::TaskTracker,
    started_at: i64,
}

/// Who the server is, for the announcer.
pub(crate) struct Identity {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) service: Arc<str>,
    pub(crate) server_id: Arc<str>,
    pub(crate) snapshot: Snapshot,
}

impl Presence {
    pub(crate) fn new(options: DiscoveryOptions) -> Self {
        Presence {
            options,
            health: watch::Sender::new(HealthStatus::Serving),
            methods: Arc::default(),
            shared: Arc::new(Shared {
                registrations: Mutex::default(),
                changed: Notify::new(),
                stop: CancellationToken::new(),
                started: Default::default(),
                finished: tokio_util::task::TaskTracker::new(),
                started_at: crate::time::now_unix_nanos(),
            }),
        }
    }

    /// Watches the health (for the request gates).
    pub(crate) fn health_watch(&self) -> watch::Receiver<HealthStatus> {
        self.health.subscribe()
    }

    /// The current health.
    pub(crate) fn health(&self) -> HealthStatus {
        *self.health.borrow()
    }

    /// True unless not serving.
    pub(crate) fn is_serving(&self) -> bool {
        self.health() != HealthStatus::NotServing
    }

    /// Sets the health and announces it.
    pub(crate) fn set_health(&self, status: HealthStatus) {
        if self.health.send_replace(status) != status {
            self.shared.changed.notify_one();
        }
    }

    /// Starts timing a call of `method` (nothing when discovery is off).
    pub(crate) fn begin(&self, method: &'static str) -> Option<CallTimer> {
        self.options.enabled.then(|| self.methods.begin(method))
    }

    /// Records a new registration, starting the announcer with the first.
    pub(crate) fn registered(
        &self,
        method: &MethodInfo,
        topics: &[String],
        stream: bool,
        identity: impl FnOnce() -> Identity,
    ) {
        if !self.options.enabled {
            return;
        }
        lock(&self.shared.registrations).push(RegistrationInfo {
            method: method.name().to_owned(),
            topics: topics.to_vec(),
            multi: method.is_multi(),
            queue: method.is_queued(),
            require_claim: method.requires_claim(),
            stream,
        });
        self.shared.changed.notify_one();
        if self
            .shared
            .started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let announcer = Announcer {
            identity: identity(),
            shared: self.shared.clone(),
            health: self.health.subscribe(),
            options: self.options.clone(),
            methods: self.methods.clone(),
        };
        self.shared.finished.spawn(announcer.run());
        self.shared.finished.close();
    }

    /// Forgets a registration.
    pub(crate) fn deregistered(&self, method: &str, topics: &[&str]) {
        let mut regs = lock(&self.shared.registrations);
        let before = regs.len();
        regs.retain(|r| {
            !(r.method == method
                && r.topics
                    .iter()
                    .map(String::as_str)
                    .eq(topics.iter().copied()))
        });
        if regs.len() != before {
            self.shared.changed.notify_one();
        }
    }

    /// Stops the announcer, which says goodbye if its runtime still runs.
    pub(crate) fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Stops the announcer and waits (bounded) until its goodbye went out.
    pub(crate) async fn goodbye(&self) {
        self.stop();
        if self
            .shared
            .started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let _ = tokio::time::timeout(GOODBYE_BOUND, self.shared.finished.wait()).await;
        }
    }
}

/// The task announcing one server.
struct Announcer {
    identity: Identity,
    shared: Arc<Shared>,
    health: watch::Receiver<HealthStatus>,
    options: DiscoveryOptions,
    methods: Arc<MethodTable>,
}

impl Announcer {
    async fn run(self) {
        let queries = self
            .identity
            .bus
            .subscribe(&query_channel(), SubscribeOptions { capacity: 64 })
            .await;
        let mut queries = match queries {
            Ok(sub) => Some(sub),
            Err(err) => {
                tracing::warn!(%err, "discovery: cannot subscribe to queries; announcing only");
                None
            }
        };
        self.announce(AnnouncementKind::Hello, None).await;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.options.heartbeat,
            self.options.heartbeat,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => break,
                _ = self.shared.changed.notified() => self.announce(AnnouncementKind::Hello, None).await,
                _ = tick.tick() => self.announce(AnnouncementKind::Heartbeat, None).await,
                query = async { queries.as_mut().expect("guarded").recv().await }, if queries.is_some() => {
                    match query.map(decode_query) {
                        Some(Some(q)) if q.service.is_empty() || *q.service == *self.identity.service => {
                            self.announce(AnnouncementKind::Answer, Some(&q)).await;
                        }
                        Some(_) => {}
                        None => queries = None,
                    }
                }
            }
        }
        drop(queries);
        let bye = self.announce(AnnouncementKind::Goodbye, None);
        let _ = tokio::time::timeout(GOODBYE_BOUND, async {
            bye.await;
            let _ = self.identity.bus.flush().await;
        })
        .await;
    }

    fn info(&self) -> Option<(ServerInfo, [u64; 5])> {
        let counters = (self.identity.snapshot)()?;
        let info = ServerInfo {
            server_id: self.identity.server_id.to_string(),
            service: self.identity.service.to_string(),
            registrations: lock(&self.shared.registrations).clone(),
            version: self.options.version.clone(),
            psrpc_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: super::host_name(),
            pid: std::process::id(),
            started_at: self.shared.started_at,
            health: *self.health.borrow() as i32,
            heartbeat_ms: self.options.heartbeat.as_millis() as u64,
            in_flight: counters[4],
            bus: self.identity.bus.name().to_owned(),
        };
        Some((info, counters))
    }

    async fn announce(&self, kind: AnnouncementKind, query: Option<&Query>) {
        let Some((info, c)) = self.info() else {
            return;
        };
        let stats = query.filter(|q| q.stats).map(|_| StatsSnapshot {
            received: c[0],
            handled: c[1],
            malformed: c[2],
            shed: c[3],
            in_flight: c[4],
            methods: self.methods.snapshot(),
        });
        let msg = Announcement {
            kind: kind as i32,
            server: Some(info),
            stats,
            query_id: query.map(|q| q.query_id.clone()).unwrap_or_default(),
            sent_at: crate::time::now_unix_nanos(),
        };
        let payload = wire::encode_envelope(ANNOUNCEMENT_TYPE_URL, &msg);
        if let Err(err) = self
            .identity
            .bus
            .publish(&presence_channel(), payload)
            .await
        {
            tracing::debug!(%err, ?kind, "discovery: announcement not published");
        }
    }
}

fn decode_query(payload: bytes::Bytes) -> Option<Query> {
    let msg = wire::decode_envelope(payload).ok()?;
    if msg.type_url != QUERY_TYPE_URL {
        return None;
    }
    Query::decode(msg.value).ok()
}
