//! What a handler knows about the call it serves.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Metadata;
use crate::trace::TraceContext;

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
    pub(crate) service: Arc<str>,
    pub(crate) method: crate::MethodInfo,
    pub(crate) topics: Arc<[String]>,
    pub(crate) request_id: String,
    pub(crate) client_id: String,
    pub(crate) server_id: Arc<str>,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
    pub(crate) cancel: CancellationToken,
    pub(crate) multi: bool,
    pub(crate) received_at: Instant,
    /// The caller's wall clock when it sent the request, Unix nanoseconds (0: not sent).
    pub(crate) sent_at: i64,
    pub(crate) trace: Option<TraceContext>,
}

impl RequestContext {
    /// The service being served.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// True for a multi call (every server answers).
    pub fn is_multi(&self) -> bool {
        self.multi
    }

    /// When this server accepted the request (or the stream open).
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// When the caller sent the request (or the stream open), by the caller's wall clock, as
    /// Go psrpc exposes it; `None` if the caller did not say. Clocks of different machines
    /// differ: compare with care.
    pub fn sent_at(&self) -> Option<std::time::SystemTime> {
        let nanos = u64::try_from(self.sent_at).ok().filter(|n| *n > 0)?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_nanos(nanos))
    }

    /// The caller's metadata, for interceptors that change it.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The trace position of this request (a child of the caller's `traceparent`), if the
    /// caller sent one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The method being served.
    pub fn method(&self) -> crate::MethodInfo {
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
