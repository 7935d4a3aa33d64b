//! The protobuf messages of discovery (docs/wire.md, "Rust-only discovery").
//!
//! They travel inside the usual `Msg` envelope, under type URLs of their own, on channels of
//! the reserved service [`DISCOVERY_SERVICE`](super::DISCOVERY_SERVICE); Go peers never
//! subscribe there.

/// Type URL of [`Announcement`].
pub const ANNOUNCEMENT_TYPE_URL: &str = "type.googleapis.com/psrpc.discovery.Announcement";
/// Type URL of [`Query`].
pub const QUERY_TYPE_URL: &str = "type.googleapis.com/psrpc.discovery.Query";

/// Why a server published an [`Announcement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AnnouncementKind {
    /// The server started, or what it serves or its health changed.
    Hello = 0,
    /// Periodic proof of life.
    Heartbeat = 1,
    /// The server is leaving cleanly.
    Goodbye = 2,
    /// An answer to a [`Query`].
    Answer = 3,
}

/// Health of a service on one server, as gRPC's health protocol spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum HealthStatus {
    /// Not known (never set on the wire by psrpc servers).
    Unknown = 0,
    /// Takes calls.
    Serving = 1,
    /// Takes no new calls (draining, or set so by the application).
    NotServing = 2,
}

/// A server telling everyone who it is (fan-out on the presence channel).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Announcement {
    /// Why it was sent.
    #[prost(enumeration = "AnnouncementKind", tag = "1")]
    pub kind: i32,
    /// The server.
    #[prost(message, optional, tag = "2")]
    pub server: Option<ServerInfo>,
    /// Its counters; set when a query asked for them.
    #[prost(message, optional, tag = "3")]
    pub stats: Option<StatsSnapshot>,
    /// The query answered, for [`AnnouncementKind::Answer`].
    #[prost(string, tag = "4")]
    pub query_id: String,
    /// When it was sent, Unix nanoseconds.
    #[prost(int64, tag = "5")]
    pub sent_at: i64,
}

/// What a server is and serves.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerInfo {
    /// Server ID (`SRV_…`).
    #[prost(string, tag = "1")]
    pub server_id: String,
    /// Service name.
    #[prost(string, tag = "2")]
    pub service: String,
    /// Registered methods, with their topics.
    #[prost(message, repeated, tag = "3")]
    pub registrations: Vec<RegistrationInfo>,
    /// The application's version (may be empty).
    #[prost(string, tag = "4")]
    pub version: String,
    /// The psrpc crate version the server runs.
    #[prost(string, tag = "5")]
    pub psrpc_version: String,
    /// Host name.
    #[prost(string, tag = "6")]
    pub host: String,
    /// Process ID.
    #[prost(uint32, tag = "7")]
    pub pid: u32,
    /// Start time, Unix nanoseconds.
    #[prost(int64, tag = "8")]
    pub started_at: i64,
    /// Health of the service on this server.
    #[prost(enumeration = "HealthStatus", tag = "9")]
    pub health: i32,
    /// The heartbeat period, milliseconds.
    #[prost(uint64, tag = "10")]
    pub heartbeat_ms: u64,
    /// Handlers running at the time of the announcement.
    #[prost(uint64, tag = "11")]
    pub in_flight: u64,
    /// The bus kind (`nats`, `redis`, …).
    #[prost(string, tag = "12")]
    pub bus: String,
}

/// One registration: a method on a tuple of topics.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RegistrationInfo {
    /// Method name.
    #[prost(string, tag = "1")]
    pub method: String,
    /// Topics (empty for none).
    #[prost(string, repeated, tag = "2")]
    pub topics: Vec<String>,
    /// Multi (fan-out, every server answers).
    #[prost(bool, tag = "3")]
    pub multi: bool,
    /// Queue-routed.
    #[prost(bool, tag = "4")]
    pub queue: bool,
    /// Servers claim each request.
    #[prost(bool, tag = "5")]
    pub require_claim: bool,
    /// A stream method.
    #[prost(bool, tag = "6")]
    pub stream: bool,
}

/// A server's counters at one moment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsSnapshot {
    /// Requests accepted for processing.
    #[prost(uint64, tag = "1")]
    pub received: u64,
    /// Handlers that ran to completion.
    #[prost(uint64, tag = "2")]
    pub handled: u64,
    /// Malformed payloads dropped.
    #[prost(uint64, tag = "3")]
    pub malformed: u64,
    /// Requests refused at the in-flight limit.
    #[prost(uint64, tag = "4")]
    pub shed: u64,
    /// Handlers running.
    #[prost(uint64, tag = "5")]
    pub in_flight: u64,
    /// Per method.
    #[prost(message, repeated, tag = "6")]
    pub methods: Vec<MethodStats>,
}

/// Counters and latency of one method on one server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MethodStats {
    /// Method name.
    #[prost(string, tag = "1")]
    pub method: String,
    /// Calls handled.
    #[prost(uint64, tag = "2")]
    pub calls: u64,
    /// Calls that ended with an error.
    #[prost(uint64, tag = "3")]
    pub errors: u64,
    /// Calls running.
    #[prost(uint64, tag = "4")]
    pub in_flight: u64,
    /// Handler latency, 50th percentile, microseconds (bucket upper bound).
    #[prost(uint64, tag = "5")]
    pub p50_us: u64,
    /// 90th percentile, microseconds.
    #[prost(uint64, tag = "6")]
    pub p90_us: u64,
    /// 99th percentile, microseconds.
    #[prost(uint64, tag = "7")]
    pub p99_us: u64,
}

/// "Who is there?": every server (of `service`, or all) answers with an announcement.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Query {
    /// Echoed in the answers.
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// Only servers of this service answer (empty: all).
    #[prost(string, tag = "2")]
    pub service: String,
    /// Answers carry a [`StatsSnapshot`].
    #[prost(bool, tag = "3")]
    pub stats: bool,
}

impl ServerInfo {
    /// True when the server registered `method` on exactly `topics`.
    pub fn serves(&self, method: &str, topics: &[&str]) -> bool {
        self.registrations.iter().any(|r| {
            r.method == method
                && r.topics
                    .iter()
                    .map(String::as_str)
                    .eq(topics.iter().copied())
        })
    }
}
