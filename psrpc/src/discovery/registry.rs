//! The client side of discovery: a live view of the servers on a bus.

use crate::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::completion::Completion;
use super::wire::{
    ANNOUNCEMENT_TYPE_URL, Announcement, AnnouncementKind, HealthStatus, QUERY_TYPE_URL, Query,
    ServerInfo, StatsSnapshot,
};
use super::{presence_channel, query_channel};
use crate::bus::{Bus, IntoBus, SubscribeOptions, Subscription};
use crate::{Result, wire};

/// Options of a [`Discovery`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct WatchOptions {
    /// A server not heard from for this long is dropped from the view. `None`: three of the
    /// heartbeat periods the server announced.
    pub liveness_timeout: Option<Duration>,
}

impl WatchOptions {
    /// Sets [`liveness_timeout`](Self::liveness_timeout).
    pub fn liveness_timeout(mut self, liveness_timeout: Duration) -> Self {
        self.liveness_timeout = Some(liveness_timeout);
        self
    }
}

/// How many heartbeats a server may miss before it is dropped (by default).
const MISSED_HEARTBEATS: u32 = 3;

/// One server as the view knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// What it announced last.
    pub info: ServerInfo,
    /// When it was last heard from.
    pub last_seen: Instant,
}

struct View {
    peers: Mutex<HashMap<String, Peer>>,
    /// Bumped at every change of the view.
    version: watch::Sender<u64>,
    /// Queries waiting for answers, by query ID.
    answers: DashMap<String, mpsc::UnboundedSender<Announcement>>,
    options: WatchOptions,
    /// When watching began: until a heartbeat has passed, the view may lack servers whose
    /// first announcement is still on its way.
    born: Instant,
}

/// A live view of the psrpc servers on a bus, built from their announcements: who serves
/// what, their health, and their counters on request.
///
/// Servers that start appear at once, those that stop cleanly leave at once, and those that
/// crash leave after the liveness timeout ([`WatchOptions::liveness_timeout`]). Go psrpc
/// servers do not announce themselves and never appear.
///
/// ```
/// use psrpc::{MethodInfo, Server, bus::LocalBus, discovery::Discovery};
///
/// const ECHO: MethodInfo = MethodInfo::unary("Echo");
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bus = LocalBus::new();
/// let discovery = Discovery::new(bus.clone()).await.unwrap();
/// let server = Server::new("Echoer", bus);
/// server.register_unary(ECHO, &[], |_ctx, s: String| async move { Ok(s) }).await.unwrap();
/// discovery
///     .wait_for(std::time::Duration::from_secs(5), |d| d.servers("Echoer").len() == 1)
///     .await
///     .unwrap();
/// assert_eq!(discovery.servers("Echoer")[0].server_id, server.id());
/// # });
/// ```
#[derive(Clone)]
pub struct Discovery {
    view: Arc<View>,
    bus: Arc<dyn Bus>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("servers", &lock(&self.view.peers).len())
            .finish()
    }
}

impl Discovery {
    /// Watches `bus` with default options.
    ///
    /// # Errors
    /// The bus error of a failed subscribe or publish.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it completes, nothing is left running.
    pub async fn new(bus: impl IntoBus) -> Result<Self> {
        Self::with_options(bus, WatchOptions::default()).await
    }

    /// Watches `bus`: subscribes to announcements and asks every server to announce itself.
    ///
    /// # Errors
    /// The bus error of a failed subscribe or publish.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it completes, nothing is left running.
    pub async fn with_options(bus: impl IntoBus, options: WatchOptions) -> Result<Self> {
        let bus = bus.into_bus();
        let sub = bus
            .subscribe(&presence_channel(), SubscribeOptions::default())
            .await?;
        let view = Arc::new(View {
            peers: Mutex::default(),
            version: watch::Sender::new(0),
            answers: DashMap::new(),
            options,
            born: Instant::now(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(watch_loop(view.clone(), sub, stop.clone()));
        let discovery = Discovery {
            view,
            bus,
            _stop: Arc::new(StopOnDrop(stop)),
        };
        discovery.publish_query("", false, String::new()).await?;
        Ok(discovery)
    }

    /// The live servers of `service` (every service for `""`), by server ID.
    pub fn servers(&self, service: &str) -> Vec<ServerInfo> {
        let mut out: Vec<ServerInfo> = lock(&self.view.peers)
            .values()
            .filter(|p| service.is_empty() || p.info.service == service)
            .map(|p| p.info.clone())
            .collect();
        out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        out
    }

    /// Every live server with when it was last heard from.
    pub fn peers(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = lock(&self.view.peers).values().cloned().collect();
        out.sort_by(|a, b| a.info.server_id.cmp(&b.info.server_id));
        out
    }

    /// The live servers of each service.
    pub fn services(&self) -> BTreeMap<String, Vec<ServerInfo>> {
        let mut out: BTreeMap<String, Vec<ServerInfo>> = BTreeMap::new();
        for info in self.servers("") {
            out.entry(info.service.clone()).or_default().push(info);
        }
        out
    }

    /// The live, serving servers of `service` that registered `method` on `topics`.
    pub fn serving(&self, service: &str, method: &str, topics: &[&str]) -> Vec<ServerInfo> {
        self.servers(service)
            .into_iter()
            .filter(|s| s.health() == HealthStatus::Serving && s.serves(method, topics))
            .collect()
    }

    /// The health of `service`: serving if one of its servers is, not serving if all known
    /// ones are not, unknown if none is known.
    pub fn health(&self, service: &str) -> HealthStatus {
        let servers = self.servers(service);
        if servers.is_empty() {
            HealthStatus::Unknown
        } else if servers.iter().any(|s| s.health() == HealthStatus::Serving) {
            HealthStatus::Serving
        } else {
            HealthStatus::NotServing
        }
    }

    /// A [`Completion`] that ends a multi call of `method` on `topics` once every live, serving
    /// server known for it answered. Go servers do not announce themselves: with them about,
    /// the call's timeout remains the bound of what it collects.
    pub fn all_known(&self, service: &str, method: &str, topics: &[&str]) -> Completion {
        // Read in place: every early multi call asks, so no server's description is copied.
        let ids = lock(&self.view.peers)
            .values()
            .filter(|p| {
                (service.is_empty() || p.info.service == service)
                    && p.info.health() == HealthStatus::Serving
                    && p.info.serves(method, topics)
            })
            .map(|p| p.info.server_id.clone())
            .collect();
        Completion::Servers(ids)
    }

    /// Resolves at the next change of the view (a server appeared, left, or changed).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn changed(&self) {
        let mut rx = self.view.version.subscribe();
        let _ = rx.changed().await;
    }

    /// Waits until `ready` holds for the view, at most `timeout`.
    ///
    /// # Errors
    /// `deadline_exceeded` when it does not hold in time.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for(&self, timeout: Duration, ready: impl Fn(&Self) -> bool) -> Result<()> {
        let mut rx = self.view.version.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if ready(self) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| crate::Error::timed_out())
    }

    /// Watches the health of `service` ([`health`](Self::health)): the receiver holds the
    /// current status and changes when it does, until the view is dropped.
    pub fn watch_health(&self, service: &str) -> watch::Receiver<HealthStatus> {
        let (tx, rx) = watch::channel(self.health(service));
        let this = self.clone_weak();
        let service = service.to_owned();
        let mut versions = self.view.version.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    changed = versions.changed() => if changed.is_err() { return },
                }
                let Some(view) = this.upgrade() else { return };
                let status = health_of(&view, &service);
                tx.send_if_modified(|old| std::mem::replace(old, status) != status);
            }
        });
        rx
    }

    fn clone_weak(&self) -> std::sync::Weak<View> {
        Arc::downgrade(&self.view)
    }

    /// Asks the servers of `service` (every service for `""`) to announce themselves, with
    /// their counters when `stats` is set, and collects the answers that come within `wait`
    /// (less time if every server known for the service answered before). A view younger
    /// than a [`DEFAULT_HEARTBEAT`](super::DEFAULT_HEARTBEAT) may not have heard of every
    /// server yet, so its queries collect until it is that old before they can end early.
    ///
    /// # Errors
    /// The bus error of a failed publish.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it drops the answers.
    pub async fn query(
        &self,
        service: &str,
        stats: bool,
        wait: Duration,
    ) -> Result<Vec<(ServerInfo, Option<StatsSnapshot>)>> {
        let query_id = crate::id::new_request_id();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.view.answers.insert(query_id.clone(), tx);
        let _forget = Forget(&self.view.answers, &query_id);
        // Ending once every known server answered is only sound when the view is complete:
        // a view younger than a heartbeat may not have heard every server yet (a command-line
        // tool queries right after it starts watching), so such a query collects at least
        // until the view is a heartbeat old, and only then takes the servers it knows.
        let settle_at = self.view.born + super::DEFAULT_HEARTBEAT;
        let mut known: Option<std::collections::HashSet<String>> = None;
        self.publish_query(service, stats, query_id.clone()).await?;
        let mut answers: BTreeMap<String, (ServerInfo, Option<StatsSnapshot>)> = BTreeMap::new();
        let deadline = Instant::now() + wait;
        loop {
            if known.is_none() && Instant::now() >= settle_at {
                known = Some(
                    self.servers(service)
                        .into_iter()
                        .map(|s| s.server_id)
                        .collect(),
                );
            }
            if let Some(known) = &known
                && !known.is_empty()
                && known.iter().all(|id| answers.contains_key(id))
            {
                break;
            }
            let until = if known.is_none() {
                deadline.min(settle_at)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(a)) => {
                    if let Some(info) = a.server {
                        answers.insert(info.server_id.clone(), (info, a.stats));
                    }
                }
                Ok(None) => break,
                Err(_) if until >= deadline => break,
                Err(_) => {}
            }
        }
        Ok(answers.into_values().collect())
    }

    async fn publish_query(&self, service: &str, stats: bool, query_id: String) -> Result<()> {
        let q = Query {
            query_id,
            service: service.to_owned(),
            stats,
        };
        let payload = wire::encode_envelope(QUERY_TYPE_URL, &q);
        self.bus.publish(&query_channel(), payload).await?;
        Ok(())
    }
}

struct Forget<'a>(
    &'a DashMap<String, mpsc::UnboundedSender<Announcement>>,
    &'a str,
);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

fn health_of(view: &View, service: &str) -> HealthStatus {
    let peers = lock(&view.peers);
    let mut known = false;
    for p in peers.values().filter(|p| p.info.service == service) {
        known = true;
        if p.info.health() == HealthStatus::Serving {
            return HealthStatus::Serving;
        }
    }
    if known {
        HealthStatus::NotServing
    } else {
        HealthStatus::Unknown
    }
}

fn decode_announcement(payload: bytes::Bytes) -> Option<Announcement> {
    let msg = wire::decode_envelope(payload).ok()?;
    if msg.type_url != ANNOUNCEMENT_TYPE_URL {
        return None;
    }
    Announcement::decode(msg.value).ok()
}

impl View {
    fn liveness(&self, info: &ServerInfo) -> Duration {
        self.options
            .liveness_timeout
            .unwrap_or_else(|| Duration::from_millis(info.heartbeat_ms.max(1)) * MISSED_HEARTBEATS)
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn on_announcement(&self, a: Announcement) {
        let Some(info) = a.server.clone() else { return };
        if info.server_id.is_empty() {
            return;
        }
        if !a.query_id.is_empty()
            && let Some(tx) = self.answers.get(&a.query_id)
        {
            let _ = tx.send(a.clone());
        }
        let kind = AnnouncementKind::try_from(a.kind).unwrap_or(AnnouncementKind::Heartbeat);
        let changed = {
            let mut peers = lock(&self.peers);
            if kind == AnnouncementKind::Goodbye {
                peers.remove(&info.server_id).is_some()
            } else {
                let peer = Peer {
                    info,
                    last_seen: Instant::now(),
                };
                match peers.insert(peer.info.server_id.clone(), peer.clone()) {
                    // Heartbeats carry changing counters: only what matters is a change.
                    Some(old) => !same_shape(&old.info, &peer.info),
                    None => true,
                }
            }
        };
        if changed {
            self.bump();
        }
    }

    /// Drops servers not heard from within their liveness timeout; the next sweep is due at
    /// the returned instant.
    fn sweep(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + Duration::from_millis(250);
        let mut removed = false;
        lock(&self.peers).retain(|_, p| {
            let expires = p.last_seen + self.liveness(&p.info);
            if expires <= now {
                removed = true;
                false
            } else {
                next = next.min(expires);
                true
            }
        });
        if removed {
            self.bump();
        }
        next
    }
}

/// True when two announcements of a server differ only in what changes all the time.
fn same_shape(a: &ServerInfo, b: &ServerInfo) -> bool {
    let strip = |i: &ServerInfo| ServerInfo {
        in_flight: 0,
        ..i.clone()
    };
    strip(a) == strip(b)
}

async fn watch_loop(view: Arc<View>, mut sub: Subscription, stop: CancellationToken) {
    let mut next_sweep = Instant::now() + Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            payload = sub.recv() => match payload {
                Some(payload) => {
                    if let Some(a) = decode_announcement(payload) {
                        view.on_announcement(a);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next_sweep) => next_sweep = view.sweep(),
        }
    }
}
