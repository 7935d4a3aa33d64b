//! Call metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! [`MetricsObserver`] turns each [`CallEvent`] into:
//! - `psrpc_calls_total` (counter) with labels `service`, `method`, `role`, `kind`, `code`
//!   (`ok` or the error code);
//! - `psrpc_call_duration_seconds` (histogram) with the same labels but `code`;
//! - `psrpc_request_bytes_total` and `psrpc_response_bytes_total` (counters).
//!
//! ```
//! use psrpc::interceptor::Observe;
//! use psrpc::metrics::MetricsObserver;
//!
//! let options = psrpc::ServerOptions::default().interceptor(Observe::new(MetricsObserver));
//! # let _ = options;
//! ```

use crate::interceptor::{CallEvent, Observer};

/// Records call events with the globally installed `metrics` recorder.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsObserver;

impl Observer for MetricsObserver {
    fn observe(&self, event: &CallEvent<'_>) {
        let service = event.service.to_owned();
        let method = event.method.to_owned();
        let role = event.role.as_str();
        let kind = event.kind.as_str();
        let code = event.error.map_or("ok", |c| c.as_str()).to_owned();
        metrics::counter!("psrpc_calls_total",
            "service" => service.clone(), "method" => method.clone(),
            "role" => role, "kind" => kind, "code" => code)
        .increment(1);
        metrics::histogram!("psrpc_call_duration_seconds",
            "service" => service.clone(), "method" => method.clone(),
            "role" => role, "kind" => kind)
        .record(event.duration.as_secs_f64());
        metrics::counter!("psrpc_request_bytes_total",
            "service" => service.clone(), "method" => method.clone(), "role" => role)
        .increment(event.request_bytes as u64);
        metrics::counter!("psrpc_response_bytes_total",
            "service" => service, "method" => method, "role" => role)
        .increment(event.response_bytes as u64);
    }
}
