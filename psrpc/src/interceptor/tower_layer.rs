//! Reusing tower middleware as a server interceptor.

use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use tower::{Layer, Service, ServiceExt};

use super::{BoxResponse, ServerCall, ServerInterceptor, ServerNext};
use crate::{Error, ErrorCode};

/// A request travelling through a tower stack inside a [`TowerLayer`]: the call and the rest of
/// the interceptor chain.
#[derive(Debug)]
pub struct TowerCall {
    /// The call; tower middleware may inspect it.
    pub call: ServerCall,
    next: ServerNext,
}

/// The innermost tower service of a [`TowerLayer`]: runs the rest of the psrpc chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct Continue;

impl Service<TowerCall> for Continue {
    type Response = Bytes;
    type Error = Error;
    type Future = BoxResponse;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: TowerCall) -> BoxResponse {
        req.next.run(req.call)
    }
}

/// Runs server calls through a tower [`Layer`] stack (timeouts, concurrency limits, load
/// shedding, …), built once so stateful middleware shares its state across calls.
///
/// Errors map to psrpc codes: a psrpc [`Error`] stays as it is, tower's timeout becomes
/// `deadline_exceeded`, load shedding `resource_exhausted`, anything else `internal`.
///
/// ```
/// use std::time::Duration;
/// use psrpc::interceptor::TowerLayer;
/// use tower::ServiceBuilder;
///
/// let layer = TowerLayer::new(
///     ServiceBuilder::new()
///         .load_shed()
///         .concurrency_limit(64)
///         .timeout(Duration::from_secs(2)),
/// );
/// let options = psrpc::ServerOptions::default().interceptor(layer);
/// # let _ = options;
/// ```
pub struct TowerLayer<S> {
    // Tower services are `Send` but often not `Sync`; a clone is taken per call.
    service: Mutex<S>,
}

impl<S> std::fmt::Debug for TowerLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerLayer").finish_non_exhaustive()
    }
}

impl<S> TowerLayer<S> {
    /// Builds the stack of `layer` around the rest of the chain.
    pub fn new<L: Layer<Continue, Service = S>>(layer: L) -> Self {
        TowerLayer {
            service: Mutex::new(layer.layer(Continue)),
        }
    }
}

impl<S> ServerInterceptor for TowerLayer<S>
where
    S: Service<TowerCall, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        let service = crate::sync::lock(&self.service).clone();
        Box::pin(async move {
            service
                .oneshot(TowerCall { call, next })
                .await
                .map_err(|err| from_tower(err.into()))
        })
    }
}

fn from_tower(err: tower::BoxError) -> Error {
    if let Some(err) = err.downcast_ref::<Error>() {
        return err.clone();
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        return Error::new(ErrorCode::DeadlineExceeded, "handler timed out");
    }
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Error::new(ErrorCode::ResourceExhausted, "server overloaded");
    }
    Error::new(ErrorCode::Internal, err.to_string())
}
