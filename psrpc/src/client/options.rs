//! Client-wide and per-call options.

use std::time::Duration;

use tokio::time::Instant;

use super::SelectionOptions;
use crate::Metadata;
use crate::interceptor::{ClientInterceptor, Interceptors};

/// Default time a call waits for its answer (docs/wire.md §9).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Options of a [`super::Client`]: `Default` plus a setter per field.
///
/// ```
/// use std::time::Duration;
/// use psrpc::ClientOptions;
///
/// let opts = ClientOptions::default()
///     .client_id("CLI_edge")
///     .timeout(Duration::from_secs(1));
/// assert_eq!(opts.client_id.as_deref(), Some("CLI_edge"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The client ID; a fresh `CLI_…` when `None`.
    pub client_id: Option<String>,
    /// How long a call waits when the call sets no timeout or deadline.
    pub timeout: Duration,
    /// Ask Rust servers of queue-routed methods to answer without the claim exchange (two
    /// messages per call instead of four). Go servers ignore the request and claim as usual.
    pub direct_queue_calls: bool,
    /// Buffer of the client's reply subscriptions, in messages. A multi call answered by more
    /// servers at once than this may lose answers; it then says so in its results (see
    /// [`super::MultiResult::dropped_answers`]). Raise it for large fleets.
    pub subscription_capacity: usize,
    /// Tuning of the streams this client opens.
    pub stream: crate::stream::StreamOptions,
    /// Middleware around every call, outermost first.
    pub interceptors: Interceptors<dyn ClientInterceptor>,
    /// Start a new trace (a `traceparent` in the metadata) for calls made outside any traced
    /// request. Calls made while serving a traced request always continue its trace.
    pub start_traces: bool,
}

impl ClientOptions {
    /// Sets [`client_id`](Self::client_id).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`direct_queue_calls`](Self::direct_queue_calls).
    pub fn direct_queue_calls(mut self, direct_queue_calls: bool) -> Self {
        self.direct_queue_calls = direct_queue_calls;
        self
    }

    /// Sets [`subscription_capacity`](Self::subscription_capacity).
    pub fn subscription_capacity(mut self, subscription_capacity: usize) -> Self {
        self.subscription_capacity = subscription_capacity;
        self
    }

    /// Sets [`stream`](Self::stream).
    pub fn stream(mut self, stream: crate::stream::StreamOptions) -> Self {
        self.stream = stream;
        self
    }

    /// Sets [`start_traces`](Self::start_traces).
    pub fn start_traces(mut self, start_traces: bool) -> Self {
        self.start_traces = start_traces;
        self
    }
}

impl ClientOptions {
    /// Adds an interceptor after those already added.
    pub fn interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        self.interceptors.0.push(std::sync::Arc::new(interceptor));
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_id: None,
            timeout: DEFAULT_TIMEOUT,
            direct_queue_calls: true,
            subscription_capacity: crate::bus::DEFAULT_SUBSCRIPTION_CAPACITY,
            stream: crate::stream::StreamOptions::default(),
            interceptors: Interceptors::default(),
            start_traces: false,
        }
    }
}

/// Options of one call.
///
/// ```
/// use std::time::Duration;
/// use psrpc::CallOptions;
///
/// let opts = CallOptions::new()
///     .timeout(Duration::from_millis(500))
///     .metadata("user", "alice");
/// assert_eq!(opts.metadata.get("user").map(String::as_str), Some("alice"));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// How long to wait; the client's default when `None`.
    pub timeout: Option<Duration>,
    /// An absolute deadline; the call ends at the sooner of this and the timeout.
    pub deadline: Option<Instant>,
    /// Metadata sent with the request.
    pub metadata: Metadata,
    /// Server selection; the method's defaults when `None`.
    pub selection: Option<SelectionOptions>,
    /// Overrides [`ClientOptions::direct_queue_calls`] for this call.
    pub direct: Option<bool>,
    /// Overrides [`MethodInfo::idempotent`](crate::MethodInfo::idempotent) for this call:
    /// whether [`Retry`](crate::interceptor::Retry) may retry it after `deadline_exceeded`.
    pub idempotent: Option<bool>,
}

impl CallOptions {
    /// The selection rules of a call of `method`: the caller's, else the method's defaults.
    pub(crate) fn selection_for(&self, method: crate::MethodInfo) -> SelectionOptions {
        self.selection
            .clone()
            .unwrap_or_else(|| SelectionOptions::for_method(method))
    }

    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets an absolute deadline.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the server selection options.
    pub fn selection(mut self, selection: SelectionOptions) -> Self {
        self.selection = Some(selection);
        self
    }

    /// Declares this call idempotent (or not), overriding the method's marking.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Asks for (or avoids) the direct path of queue-routed calls.
    pub fn direct(mut self, direct: bool) -> Self {
        self.direct = Some(direct);
        self
    }

    pub(crate) fn deadline_from(&self, now: Instant, default_timeout: Duration) -> Instant {
        let by_timeout = crate::time::instant_after(now, self.timeout.unwrap_or(default_timeout));
        self.deadline.map_or(by_timeout, |d| d.min(by_timeout))
    }
}
