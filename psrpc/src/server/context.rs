//! What a handler knows about the call it serves.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Metadata;

/// The context of one request, passed to every handler.
///
/// ```
/// # use psrpc::RequestContext;
/// async fn handler(ctx: RequestContext, req: String) -> psrpc::Result<String> {
///     let user = ctx.metadata().get("user").cloned().unwrap_or_default();
///     let work = async { format!("{user}: {req}") };
///     tokio::select! {
///         _ = ctx.cancelled() => Err(psrpc::Error::canceled()),
///         reply = work => Ok(reply),
///     }
/// }
/// # let _ = handler;
/// ```
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub(crate) method: &'static str,
    pub(crate) topics: Arc<[String]>,
    pub(crate) request_id: String,
    pub(crate) client_id: String,
    pub(crate) server_id: Arc<str>,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancellationToken,
}

impl RequestContext {
    /// The method being served.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The topics the request was sent to (empty for methods without topics).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The request ID (`REQ_…`).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The caller's client ID (`CLI_…`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// This server's ID (`SRV_…`).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the caller stops waiting; a handler still running then is abandoned.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Resolves when the caller cancels the call (a Rust caller that drops or closes it), or
    /// when the server is killed.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// True once the call is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
