//! [`ServerOptions`] and the server's fixed bounds.

use super::*;

/// Options of a [`Server`]: `Default` plus a setter per field.
///
/// ```
/// use std::time::Duration;
/// use psrpc::ServerOptions;
///
/// let opts = ServerOptions::default()
///     .max_in_flight(64)
///     .drain_timeout(Duration::from_secs(2));
/// assert_eq!(opts.max_in_flight, Some(64));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The server ID; a fresh `SRV_…` when `None`.
    pub server_id: Option<String>,
    /// Most handlers running at once; past it, requests are shed (`resource_exhausted`, or no
    /// claim for fan-out claim methods so another server takes them). `None`: no limit.
    pub max_in_flight: Option<usize>,
    /// Buffer of each request subscription (see [`crate::bus::SubscriptionSink::deliver`]).
    pub subscription_capacity: usize,
    /// Tuning of the streams this server serves.
    pub stream: StreamOptions,
    /// Middleware around every request and stream, outermost first.
    pub interceptors: Interceptors<dyn ServerInterceptor>,
    /// How long [`Server::shutdown`] lets running handlers and open streams finish before it
    /// closes the streams (`unavailable`, "server shut down") and cancels the handlers
    /// (default 10 s).
    pub drain_timeout: std::time::Duration,
    /// How the server announces itself to [`crate::discovery::Discovery`] (on by default).
    pub discovery: crate::discovery::DiscoveryOptions,
}

impl ServerOptions {
    /// Sets [`server_id`](Self::server_id).
    pub fn server_id(mut self, server_id: impl Into<String>) -> Self {
        self.server_id = Some(server_id.into());
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = Some(max_in_flight);
        self
    }

    /// Sets [`subscription_capacity`](Self::subscription_capacity).
    pub fn subscription_capacity(mut self, subscription_capacity: usize) -> Self {
        self.subscription_capacity = subscription_capacity;
        self
    }

    /// Sets [`stream`](Self::stream).
    pub fn stream(mut self, stream: StreamOptions) -> Self {
        self.stream = stream;
        self
    }

    /// Sets [`drain_timeout`](Self::drain_timeout).
    pub fn drain_timeout(mut self, drain_timeout: std::time::Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets [`discovery`](Self::discovery).
    pub fn discovery(mut self, discovery: crate::discovery::DiscoveryOptions) -> Self {
        self.discovery = discovery;
        self
    }
}

impl ServerOptions {
    /// Adds an interceptor after those already added.
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> Self {
        self.interceptors.0.push(Arc::new(interceptor));
        self
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            server_id: None,
            max_in_flight: None,
            subscription_capacity: crate::bus::DEFAULT_SUBSCRIPTION_CAPACITY,
            stream: StreamOptions::default(),
            interceptors: Interceptors::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            discovery: crate::discovery::DiscoveryOptions::default(),
        }
    }
}

/// The default of [`ServerOptions::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for final publishes (answers of cancelled handlers, stream closes,
/// the bus flush) before it gives up on them: a broker that went away cannot hold it.
pub const FINAL_PUBLISH_BOUND: std::time::Duration = std::time::Duration::from_secs(2);
