//! Interceptors: middleware around calls, on the client and on the server.
//!
//! A [`ServerInterceptor`] wraps the handling of each unary or multi request
//! ([`ServerInterceptor::intercept`]) and sees streams open and end; a [`ClientInterceptor`]
//! wraps each unary call and sees multi calls and stream opens go out. Interceptors run in the
//! order they were added (the first is outermost), can read and change metadata, short-circuit
//! with an error, and observe results. They work on encoded messages, so one interceptor serves
//! every method.
//!
//! Ready-made: [`RecoverPanics`], [`Retry`], [`RateLimit`], [`Hooks`], [`Observe`] (per-call
//! events for metrics), and [`TowerLayer`] to reuse tower middleware (timeouts, concurrency
//! limits, load shedding) on servers.
//!
//! ```
//! use std::sync::Arc;
//! use psrpc::interceptor::{RecoverPanics, ServerCall, ServerInterceptor, ServerNext};
//! use psrpc::{Error, ErrorCode, ServerOptions};
//!
//! /// Refuses callers without a `user` entry in their metadata.
//! struct RequireUser;
//!
//! impl ServerInterceptor for RequireUser {
//!     fn intercept(&self, call: ServerCall, next: ServerNext) -> psrpc::interceptor::BoxResponse {
//!         if !call.ctx.metadata().contains_key("user") {
//!             return Box::pin(async { Err(Error::new(ErrorCode::Unauthenticated, "who are you?")) });
//!         }
//!         next.run(call)
//!     }
//! }
//!
//! let options = ServerOptions::default()
//!     .interceptor(RecoverPanics)
//!     .interceptor(RequireUser);
//! # let _ = options;
//! ```

mod builtin;
mod tower_layer;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use builtin::{
    CallEvent, CallKind, Hooks, Observe, Observer, RateLimit, RecoverPanics, Retry, Role,
};
pub use tower_layer::{TowerCall, TowerLayer};

use crate::client::MultiResult;
use crate::{CallOptions, MethodInfo, RequestContext, Result};

/// The future of an intercepted call: the encoded response or an error.
pub type BoxResponse = BoxFuture<'static, Result<Bytes>>;

/// A unary or multi request as a server interceptor sees it.
#[derive(Clone, Debug)]
pub struct ServerCall {
    /// The request's context; interceptors may change its metadata for the ones after them
    /// and the handler.
    pub ctx: RequestContext,
    /// The encoded request, for observation (the handler gets the request decoded before the
    /// chain ran).
    pub request: Bytes,
}

/// The rest of a server chain: the interceptors after this one, then the handler.
pub struct ServerNext {
    chain: Arc<[Arc<dyn ServerInterceptor>]>,
    index: usize,
    handler: Box<dyn FnOnce(ServerCall) -> BoxResponse + Send>,
}

impl std::fmt::Debug for ServerNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerNext")
            .field("remaining", &(self.chain.len() - self.index))
            .finish()
    }
}

impl ServerNext {
    pub(crate) fn new(
        chain: Arc<[Arc<dyn ServerInterceptor>]>,
        handler: impl FnOnce(ServerCall) -> BoxResponse + Send + 'static,
    ) -> Self {
        ServerNext {
            chain,
            index: 0,
            handler: Box::new(handler),
        }
    }

    /// Runs the rest of the chain.
    pub fn run(self, call: ServerCall) -> BoxResponse {
        match self.chain.get(self.index).cloned() {
            Some(interceptor) => {
                let next = ServerNext {
                    index: self.index + 1,
                    ..self
                };
                interceptor.intercept(call, next)
            }
            None => (self.handler)(call),
        }
    }
}

/// Middleware on the server side.
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Wraps the handling of one unary or multi request; call `next.run(call)` to go on.
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        next.run(call)
    }

    /// Sees a stream being opened before its handler runs; an error refuses it (the client's
    /// open fails with that error). May change the metadata the handler sees.
    fn on_stream_open(&self, ctx: &mut RequestContext) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Sees a stream's handler end with its result.
    fn on_stream_close(&self, ctx: &RequestContext, result: &Result<()>) {
        let _ = (ctx, result);
    }
}

/// A unary call, a multi call or a stream open as a client interceptor sees it.
#[derive(Clone, Debug)]
pub struct ClientCall {
    /// The service called.
    pub service: Arc<str>,
    /// The method called.
    pub method: MethodInfo,
    /// The topics called.
    pub topics: Vec<String>,
    /// The encoded request (empty for a stream open).
    pub request: Bytes,
    /// The call's options; interceptors may change the metadata, timeout and selection. For a
    /// unary call the client has set `deadline` to the call's overall deadline (the sooner of
    /// the caller's deadline and timeout), which bounds every run of the rest of the chain.
    pub options: CallOptions,
    /// When the call started.
    pub started: tokio::time::Instant,
}

/// The rest of a client chain: the interceptors after this one, then the call on the bus.
///
/// Cloneable, so an interceptor can run the rest more than once (retries).
#[derive(Clone)]
pub struct ClientNext {
    chain: Arc<[Arc<dyn ClientInterceptor>]>,
    index: usize,
    send: Arc<dyn Fn(ClientCall) -> BoxResponse + Send + Sync>,
}

impl std::fmt::Debug for ClientNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext")
            .field("remaining", &(self.chain.len() - self.index))
            .finish()
    }
}

impl ClientNext {
    pub(crate) fn new(
        chain: Arc<[Arc<dyn ClientInterceptor>]>,
        send: Arc<dyn Fn(ClientCall) -> BoxResponse + Send + Sync>,
    ) -> Self {
        ClientNext {
            chain,
            index: 0,
            send,
        }
    }

    /// Runs the rest of the chain.
    pub fn run(&self, call: ClientCall) -> BoxResponse {
        match self.chain.get(self.index).cloned() {
            Some(interceptor) => {
                let next = ClientNext {
                    chain: self.chain.clone(),
                    index: self.index + 1,
                    send: self.send.clone(),
                };
                interceptor.intercept(call, next)
            }
            None => (self.send)(call),
        }
    }
}

/// Middleware on the client side.
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Wraps one unary call; call `next.run(call)` (once or more) to go on.
    fn intercept(&self, call: ClientCall, next: ClientNext) -> BoxResponse {
        next.run(call)
    }

    /// Sees a multi call before it is sent; an error stops it.
    fn on_multi_request(&self, call: &mut ClientCall) -> Result<()> {
        let _ = call;
        Ok(())
    }

    /// Sees each server's answer to a multi call.
    fn on_multi_result(&self, call: &ClientCall, result: &MultiResult<Bytes>) {
        let _ = (call, result);
    }

    /// Sees a stream open before it is sent; an error stops it.
    fn on_stream_open(&self, call: &mut ClientCall) -> Result<()> {
        let _ = call;
        Ok(())
    }
}

/// The interceptors of a client or server, in order.
pub struct Interceptors<T: ?Sized>(pub(crate) Vec<Arc<T>>);

// Manual impls: derives would require `T: Clone` / `T: Default` of the trait object.
impl<T: ?Sized> Clone for Interceptors<T> {
    fn clone(&self) -> Self {
        Interceptors(self.0.clone())
    }
}

impl<T: ?Sized> Default for Interceptors<T> {
    fn default() -> Self {
        Interceptors(Vec::new())
    }
}

impl<T: ?Sized> Interceptors<T> {
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn chain(&self) -> Arc<[Arc<T>]> {
        self.0.iter().cloned().collect()
    }
}

impl<T: ?Sized> std::fmt::Debug for Interceptors<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} interceptors]", self.0.len())
    }
}

/// Runs `f` over each interceptor in order, stopping at the first error.
pub(crate) fn each<T: ?Sized>(chain: &[Arc<T>], mut f: impl FnMut(&T) -> Result<()>) -> Result<()> {
    chain.iter().try_for_each(|i| f(i))
}
