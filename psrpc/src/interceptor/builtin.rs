//! Ready-made interceptors.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use super::{
    BoxResponse, ClientCall, ClientInterceptor, ClientNext, ServerCall, ServerInterceptor,
    ServerNext,
};
use crate::client::{DEFAULT_TIMEOUT, MultiResult};
use crate::{Error, ErrorCode, RequestContext, Result};

/// Turns a panicking handler into an `internal` error for its caller; the server keeps
/// serving. Applies to unary and multi handlers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoverPanics;

impl ServerInterceptor for RecoverPanics {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        let method = call.ctx.method().name();
        let request_id = call.ctx.request_id().to_owned();
        // The handler can panic while building its future or while running it.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| next.run(call)));
        Box::pin(async move {
            let outcome = match started {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            outcome.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                tracing::error!(method, %request_id, panic = %what, "handler panicked");
                Err(Error::new(
                    ErrorCode::Internal,
                    "internal error: handler panicked",
                ))
            })
        })
    }
}

/// Retries unary calls that failed with a retryable error, with exponential backoff and
/// jitter, up to a bounded number of attempts.
///
/// - The caller's deadline (timeout or deadline of the call) bounds all attempts together: no
///   attempt starts, and no backoff waits, past it.
/// - `deadline_exceeded` means the handler may have run, so it is retried only for idempotent
///   calls ([`MethodInfo::idempotent`](crate::MethodInfo::idempotent),
///   [`CallOptions::idempotent`](crate::CallOptions::idempotent)).
/// - A retry budget, shared by every client using this interceptor (and its clones), allows
///   retries up to a fraction of recent calls plus a floor per second, so retries cannot
///   multiply the load of an outage. The default, as tower's and gRPC's: 20 % of the calls of
///   the last 10 s plus 10 retries a second.
///
/// ```
/// use std::time::Duration;
/// use psrpc::{ClientOptions, interceptor::Retry};
///
/// let options = ClientOptions::default()
///     .interceptor(Retry::new(3).backoff(Duration::from_millis(20), Duration::from_millis(500)));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Retry {
    attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    jitter: f64,
    retryable: Arc<dyn Fn(&Error) -> bool + Send + Sync>,
    budget: Option<Arc<TpsBudget>>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Retry {
    /// At most `attempts` tries in all (at least one), retrying errors for which
    /// [`Error::is_retryable`] holds; backoff 50 ms doubling up to 1 s, ±20 % jitter; the
    /// default retry budget.
    pub fn new(attempts: u32) -> Self {
        Retry {
            attempts: attempts.max(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            jitter: 0.2,
            retryable: Arc::new(Error::is_retryable),
            budget: Some(Arc::new(TpsBudget::default())),
        }
    }

    /// Sets the retry budget: retries allowed are `ratio` of the calls made over the last
    /// `window` (clamped to 1–60 s) plus `min_per_second`. A ratio of 0.2 allows one retry
    /// per five calls.
    pub fn budget(mut self, window: Duration, min_per_second: u32, ratio: f32) -> Self {
        let window = window.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1000.0)
        };
        let min_per_second = min_per_second.min(i32::MAX as u32 - 1);
        self.budget = Some(Arc::new(TpsBudget::new(window, min_per_second, ratio)));
        self
    }

    /// Retries without a budget: every failed call is retried up to its attempts.
    pub fn without_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Sets the first backoff and the largest one.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets the jitter, a fraction of each backoff (0 to 1).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Decides which errors are retried.
    pub fn retry_if(mut self, retryable: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retryable = Arc::new(retryable);
        self
    }

    fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_backoff);
        // Spread retries of many callers so they do not arrive in lockstep.
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0)).unwrap_or(base)
    }

    /// Whether `err` may be retried for `call`, attempts and deadline aside.
    fn may_retry(&self, call: &ClientCall, err: &Error) -> bool {
        if !(self.retryable)(err) {
            return false;
        }
        // The handler may have run: only an idempotent call can run again.
        err.code() != ErrorCode::DeadlineExceeded
            || call
                .options
                .idempotent
                .unwrap_or(call.method.is_idempotent())
    }
}

impl ClientInterceptor for Retry {
    fn intercept(&self, call: ClientCall, next: ClientNext) -> BoxResponse {
        let this = self.clone();
        Box::pin(async move {
            // The client sets the overall deadline; the default covers other callers.
            let deadline = call.options.deadline_from(call.started, DEFAULT_TIMEOUT);
            if let Some(budget) = &this.budget {
                budget.deposit();
            }
            let mut attempt = 1;
            loop {
                let err = match next.run(call.clone()).await {
                    Err(err) if attempt < this.attempts && this.may_retry(&call, &err) => err,
                    outcome => return outcome,
                };
                let delay = this.delay(attempt - 1);
                if crate::time::deadline_in(delay) >= deadline {
                    tracing::debug!(method = call.method.name(), attempt, %err, "no time left to retry");
                    return Err(err);
                }
                if this.budget.as_ref().is_some_and(|b| !b.withdraw()) {
                    tracing::debug!(method = call.method.name(), attempt, %err, "retry budget exhausted");
                    return Err(err);
                }
                tracing::debug!(method = call.method.name(), attempt, %err, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        })
    }
}

/// A token-bucket rate limit for a server: past it, requests get `resource_exhausted`.
///
/// The bucket holds up to `burst` tokens and refills at `per_second`; each request takes one.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `per_second` requests a second on average, bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimit {
            per_second: per_second.max(0.0),
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    fn take(&self) -> bool {
        let mut bucket = crate::sync::lock(&self.bucket);
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * self.per_second;
        bucket.0 = (bucket.0 + refill).min(self.burst);
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl ServerInterceptor for RateLimit {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        if self.take() {
            return next.run(call);
        }
        Box::pin(async {
            Err(Error::new(
                ErrorCode::ResourceExhausted,
                "rate limit exceeded",
            ))
        })
    }
}

type RequestHook = Arc<dyn Fn(&ServerCall) + Send + Sync>;
type ResponseHook = Arc<dyn Fn(&RequestContext, &Result<Bytes>) + Send + Sync>;

/// Calls functions on each request a server handles and on each response it sends.
#[derive(Clone, Default)]
pub struct Hooks {
    on_request: Option<RequestHook>,
    on_response: Option<ResponseHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl Hooks {
    /// No hooks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called before the handler, with the request.
    pub fn on_request(mut self, f: impl Fn(&ServerCall) + Send + Sync + 'static) -> Self {
        self.on_request = Some(Arc::new(f));
        self
    }

    /// Called after the handler, with its outcome.
    pub fn on_response(
        mut self,
        f: impl Fn(&RequestContext, &Result<Bytes>) + Send + Sync + 'static,
    ) -> Self {
        self.on_response = Some(Arc::new(f));
        self
    }
}

impl ServerInterceptor for Hooks {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        if let Some(hook) = &self.on_request {
            hook(&call);
        }
        let Some(hook) = self.on_response.clone() else {
            return next.run(call);
        };
        let ctx = call.ctx.clone();
        Box::pin(next.run(call).map(move |outcome| {
            hook(&ctx, &outcome);
            outcome
        }))
    }
}

/// Which side of a call an event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The caller.
    Client,
    /// The server handling it.
    Server,
}

impl Role {
    /// `"client"` or `"server"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// What kind of call an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A call answered by one server.
    Unary,
    /// A call answered by every server (one event per answer on the client).
    Multi,
    /// A bidirectional stream (one event when it ends).
    Stream,
}

impl CallKind {
    /// `"unary"`, `"multi"` or `"stream"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::Multi => "multi",
            CallKind::Stream => "stream",
        }
    }
}

/// One finished call, as an [`Observer`] sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallEvent<'a> {
    /// Client or server side.
    pub role: Role,
    /// Unary, multi or stream.
    pub kind: CallKind,
    /// The service.
    pub service: &'a str,
    /// The method.
    pub method: &'a str,
    /// From the start of the call (or handling) to its outcome.
    pub duration: Duration,
    /// Size of the encoded request.
    pub request_bytes: usize,
    /// Size of the encoded response (0 on error).
    pub response_bytes: usize,
    /// The error code, if the call failed.
    pub error: Option<ErrorCode>,
}

/// Receives an event per finished call, e.g. to record metrics.
pub trait Observer: Send + Sync + 'static {
    /// One call finished.
    fn observe(&self, event: &CallEvent<'_>);
}

impl<F: Fn(&CallEvent<'_>) + Send + Sync + 'static> Observer for F {
    fn observe(&self, event: &CallEvent<'_>) {
        self(event)
    }
}

/// An interceptor (for clients and servers) that reports every call to an [`Observer`].
///
/// ```
/// use psrpc::interceptor::{CallEvent, Observe};
/// use psrpc::{ClientOptions, ServerOptions};
///
/// let log = Observe::new(|e: &CallEvent<'_>| println!("{} {} {:?}", e.method, e.role.as_str(), e.duration));
/// let client = ClientOptions::default().interceptor(log.clone());
/// let server = ServerOptions::default().interceptor(log);
/// # let _ = (client, server);
/// ```
#[derive(Clone)]
pub struct Observe {
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Observe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

impl Observe {
    /// Reports to `observer`.
    pub fn new(observer: impl Observer) -> Self {
        Observe {
            observer: Arc::new(observer),
        }
    }
}

fn outcome_sizes(outcome: &Result<Bytes>) -> (usize, Option<ErrorCode>) {
    match outcome {
        Ok(bytes) => (bytes.len(), None),
        Err(err) => (0, Some(err.code())),
    }
}

impl ServerInterceptor for Observe {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        let observer = self.observer.clone();
        let ctx = call.ctx.clone();
        let request_bytes = call.request.len();
        let started = Instant::now();
        Box::pin(next.run(call).map(move |outcome| {
            let (response_bytes, error) = outcome_sizes(&outcome);
            observer.observe(&CallEvent {
                role: Role::Server,
                kind: if ctx.is_multi() {
                    CallKind::Multi
                } else {
                    CallKind::Unary
                },
                service: ctx.service(),
                method: ctx.method().name(),
                duration: started.elapsed(),
                request_bytes,
                response_bytes,
                error,
            });
            outcome
        }))
    }

    fn on_stream_close(&self, ctx: &RequestContext, result: &Result<()>) {
        self.observer.observe(&CallEvent {
            role: Role::Server,
            kind: CallKind::Stream,
            service: ctx.service(),
            method: ctx.method().name(),
            duration: ctx.received_at().elapsed(),
            request_bytes: 0,
            response_bytes: 0,
            error: result.as_ref().err().map(Error::code),
        });
    }
}

impl ClientInterceptor for Observe {
    fn intercept(&self, call: ClientCall, next: ClientNext) -> BoxResponse {
        let observer = self.observer.clone();
        let started = Instant::now();
        let (service, method, request_bytes) =
            (call.service.clone(), call.method.name(), call.request.len());
        Box::pin(next.run(call).map(move |outcome| {
            let (response_bytes, error) = outcome_sizes(&outcome);
            observer.observe(&CallEvent {
                role: Role::Client,
                kind: CallKind::Unary,
                service: &service,
                method,
                duration: started.elapsed(),
                request_bytes,
                response_bytes,
                error,
            });
            outcome
        }))
    }

    fn on_multi_result(&self, call: &ClientCall, result: &MultiResult<Bytes>) {
        let (response_bytes, error) = outcome_sizes(&result.result);
        self.observer.observe(&CallEvent {
            role: Role::Client,
            kind: CallKind::Multi,
            service: &call.service,
            method: call.method.name(),
            duration: call.started.elapsed(),
            request_bytes: call.request.len(),
            response_bytes,
            error,
        });
    }
}
