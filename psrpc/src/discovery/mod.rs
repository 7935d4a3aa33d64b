//! Discovery and health: who serves what on a bus, and whether it takes calls.
//!
//! Every Rust [`Server`](crate::Server) announces itself on its bus (unless
//! [`DiscoveryOptions::enabled`] is off): its ID, service, registrations, version, host, pid,
//! start time and health, at start, every [`DiscoveryOptions::heartbeat`], whenever that
//! changes, and with a goodbye when it stops. A [`Discovery`] builds a live view from these
//! announcements and can ask servers for their counters ([`Discovery::query`]).
//!
//! Health follows gRPC's health protocol: a server is serving or not serving
//! ([`Server::set_health`](crate::Server::set_health)); [`Server::shutdown`](crate::Server::shutdown)
//! turns it not serving before it drains. A server that is not serving takes no new call: it
//! leaves its request channels (queue deliveries go to other servers; it claims nothing).
//!
//! A multi call can end once every known server answered
//! ([`MultiResponses::until`](crate::client::MultiResponses::until) with
//! [`Discovery::all_known`]), or a count of them ([`Completion`]).
//!
//! All of it travels on channels of the reserved service [`DISCOVERY_SERVICE`], which Go psrpc
//! peers never subscribe to, in messages of its own (`wire`; docs/wire.md, "Rust-only
//! discovery"). Nothing of it touches the call path but a few counter updates per call.

mod completion;
mod health;
mod presence;
mod registry;
mod stats;
pub mod wire;

use std::time::Duration;

pub use completion::Completion;
pub(crate) use completion::Progress;
pub(crate) use health::Gate;
pub use health::HealthStatus;
pub(crate) use presence::{Identity, Presence};
pub use registry::{Discovery, Peer, WatchOptions};
pub use wire::{MethodStats, RegistrationInfo, ServerInfo, StatsSnapshot};

use crate::Channel;

/// The service name discovery's channels live under. Go psrpc never subscribes to it.
pub const DISCOVERY_SERVICE: &str = "psrpc_discovery";

/// The default of [`DiscoveryOptions::heartbeat`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// How a server announces itself.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DiscoveryOptions {
    /// Announce this server (default on). Off, the server is invisible to [`Discovery`]; its
    /// health still gates its calls.
    pub enabled: bool,
    /// How often the server repeats its announcement (default [`DEFAULT_HEARTBEAT`]). Clients
    /// drop a server after three missed heartbeats by default.
    pub heartbeat: Duration,
    /// The application's version, shown by `psrpc ls` (empty by default).
    pub version: String,
}

impl DiscoveryOptions {
    /// Sets [`enabled`](Self::enabled).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets [`version`](Self::version).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            enabled: true,
            heartbeat: DEFAULT_HEARTBEAT,
            version: String::new(),
        }
    }
}

/// The fan-out channel servers announce themselves on.
pub fn presence_channel() -> Channel {
    Channel::request(DISCOVERY_SERVICE, "Presence", [""; 0], false)
}

/// The fan-out channel of "who is there?" queries.
pub fn query_channel() -> Channel {
    Channel::request(DISCOVERY_SERVICE, "Query", [""; 0], false)
}

/// This machine's name, best effort (empty when unknown).
pub(crate) fn host_name() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_default()
    })
    .clone()
}
