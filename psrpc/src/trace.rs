//! W3C trace context (`traceparent` / `tracestate`) carried in request metadata.
//!
//! Servers read the caller's `traceparent`, serve the request as a child span of it, and make
//! that the *current* context while the handler runs; calls the handler makes then carry a
//! `traceparent` of the same trace, so a trace continues across services. The keys are those of
//! OpenTelemetry's propagator, which Go psrpc's tracing middleware uses too, so traces cross
//! Go services as well. The `tracing` spans of calls record the trace ID as `trace_id`.
//!
//! ```
//! use psrpc::trace::TraceContext;
//!
//! let parent = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
//! let child = parent.child();
//! assert_eq!(child.trace_id(), parent.trace_id());
//! assert_ne!(child.span_id(), parent.span_id());
//! assert!(child.to_traceparent().starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
//! ```

use std::fmt::Write as _;
use std::future::Future;

use crate::Metadata;

/// The metadata key of the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// A position in a distributed trace: the trace, the current span, and whether it is sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
    state: Option<String>,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (sampled), for a caller that starts one.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: 1,
            state: None,
        }
    }

    /// A new span in the same trace, child of this one.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64(),
            ..self.clone()
        }
    }

    /// Parses a `traceparent` header value (version 00); `None` if malformed or all-zero.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if ![version, trace, span, flags].iter().all(|p| hex(p)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            state: None,
        })
    }

    /// The context carried by request metadata, if any.
    pub fn from_metadata(metadata: &Metadata) -> Option<Self> {
        let mut ctx = Self::parse(metadata.get(TRACEPARENT)?)?;
        ctx.state = metadata.get(TRACESTATE).cloned();
        Some(ctx)
    }

    /// Writes `traceparent` (and `tracestate` when there is one) into metadata.
    pub fn inject(&self, metadata: &mut Metadata) {
        metadata.insert(TRACEPARENT.into(), self.to_traceparent());
        if let Some(state) = &self.state {
            metadata.insert(TRACESTATE.into(), state.clone());
        }
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        let _ = write!(
            out,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        );
        out
    }

    /// The trace ID as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span ID as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// True if the trace is sampled.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The context of the request being served by the current task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this as the current context (calls it makes continue the trace).
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let s = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx = TraceContext::parse(s).unwrap();
        assert_eq!(ctx.to_traceparent(), s);
        assert!(ctx.is_sampled());
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
