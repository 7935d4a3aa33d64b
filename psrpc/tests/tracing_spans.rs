//! `tracing` spans of calls, on both sides (a binary of its own: it installs a global
//! subscriber).

use std::sync::{Arc, Mutex};

use psrpc::bus::LocalBus;
use psrpc::trace::TRACEPARENT;
use psrpc::{CallOptions, Client, Error, ErrorCode, MethodInfo, Server};

const SVC: &str = "Mw";
const ECHO: MethodInfo = MethodInfo::unary("Echo");

/// Captures the names and fields of spans.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={}", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(attrs.metadata().name().to_owned());
        attrs.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }

    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields("record".into());
        values.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

#[tokio::test(start_paused = true)]
async fn calls_get_a_span_on_each_side() {
    use tracing_subscriber::layer::SubscriberExt;
    let log = SpanLog::default();
    // The only test of this binary, so a global subscriber sees every span (a thread-local one
    // races with other tests over tracing's global per-callsite interest cache).
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(log.clone()))
        .expect("the only subscriber");

    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &["eu"], |_ctx, _req: String| async move {
            Err::<String, _>(Error::new(ErrorCode::NotFound, "nope"))
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let _ = client
        .request::<_, String>(
            ECHO,
            &["eu"],
            &"x".to_string(),
            CallOptions::new().metadata(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )
        .await;
    let spans = log.0.lock().unwrap().join("\n");
    let client_span = spans
        .lines()
        .find(|l| l.starts_with("psrpc.client"))
        .expect(&spans);
    assert!(
        client_span.contains("service=Mw") && client_span.contains("method=Echo"),
        "{client_span}"
    );
    let server_span = spans
        .lines()
        .find(|l| l.starts_with("psrpc.server"))
        .expect(&spans);
    for field in [
        "service=Mw",
        "method=Echo",
        "topics=[\"eu\"]",
        "request_id=REQ_",
        &format!("server_id={}", server.id()),
    ] {
        assert!(
            server_span.contains(field),
            "{field} missing in {server_span}"
        );
    }
    assert!(
        spans.contains("trace_id=0af7651916cd43dd8448eb211c80319c"),
        "{spans}"
    );
    assert!(
        spans
            .lines()
            .filter(|l| l.contains("code=not_found"))
            .count()
            >= 2,
        "{spans}"
    );
    assert!(spans.contains("request_id=REQ_"), "{spans}");
}
