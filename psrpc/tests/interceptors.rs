//! Interceptors, ready-made middleware, tracing spans and trace propagation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::RecordingBus;
use futures::StreamExt;
use psrpc::bus::LocalBus;
use psrpc::interceptor::{
    BoxResponse, CallEvent, CallKind, ClientCall, ClientInterceptor, ClientNext, Hooks, Observe,
    RateLimit, RecoverPanics, Retry, Role, ServerCall, ServerInterceptor, ServerNext, TowerLayer,
};
use psrpc::stream::Stream;
use psrpc::trace::{TRACEPARENT, TraceContext};
use psrpc::{
    CallOptions, Client, ClientOptions, Error, ErrorCode, MethodInfo, RequestContext, Server,
    ServerOptions,
};

const SVC: &str = "Mw";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const CHAT: MethodInfo = MethodInfo::stream("Chat");

type Log = Arc<Mutex<Vec<String>>>;

/// Logs entry and exit, adds `<name>` to the metadata key `path`.
struct Tag {
    name: &'static str,
    log: Log,
}

impl ServerInterceptor for Tag {
    fn intercept(&self, mut call: ServerCall, next: ServerNext) -> BoxResponse {
        let (name, log) = (self.name, self.log.clone());
        log.lock().unwrap().push(format!("{name} in"));
        let path = call.ctx.metadata().get("path").cloned().unwrap_or_default();
        call.ctx
            .metadata_mut()
            .insert("path".into(), format!("{path}/{name}"));
        Box::pin(async move {
            let outcome = next.run(call).await;
            log.lock().unwrap().push(format!("{name} out"));
            outcome
        })
    }
}

impl ClientInterceptor for Tag {
    fn intercept(&self, mut call: ClientCall, next: ClientNext) -> BoxResponse {
        let (name, log) = (self.name, self.log.clone());
        log.lock().unwrap().push(format!("{name} in"));
        let path = call
            .options
            .metadata
            .get("path")
            .cloned()
            .unwrap_or_default();
        call.options
            .metadata
            .insert("path".into(), format!("{path}/{name}"));
        Box::pin(async move {
            let outcome = next.run(call).await;
            log.lock().unwrap().push(format!("{name} out"));
            outcome
        })
    }
}

async fn path_server(bus: &LocalBus, options: ServerOptions, log: Log) -> Server {
    let server = Server::with_options(SVC, bus.clone(), options);
    server
        .register_unary(ECHO, &[], move |ctx: RequestContext, _req: String| {
            log.lock().unwrap().push("handler".into());
            async move { Ok(ctx.metadata().get("path").cloned().unwrap_or_default()) }
        })
        .await
        .unwrap();
    server
}

#[tokio::test(start_paused = true)]
async fn interceptors_run_in_order_and_change_metadata() {
    let bus = LocalBus::new();
    let log = Log::default();
    let server_opts = ServerOptions::default()
        .interceptor(Tag {
            name: "s1",
            log: log.clone(),
        })
        .interceptor(Tag {
            name: "s2",
            log: log.clone(),
        });
    let _server = path_server(&bus, server_opts, log.clone()).await;
    let client_opts = ClientOptions::default()
        .interceptor(Tag {
            name: "c1",
            log: log.clone(),
        })
        .interceptor(Tag {
            name: "c2",
            log: log.clone(),
        });
    let client = Client::with_options(SVC, bus, client_opts).await.unwrap();
    let path: String = client
        .request(ECHO, &[], &String::new(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(path, "/c1/c2/s1/s2");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "c1 in", "c2 in", "s1 in", "s2 in", "handler", "s2 out", "s1 out", "c2 out", "c1 out"
        ]
    );
}

struct Deny;

impl ServerInterceptor for Deny {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        if call.ctx.metadata().contains_key("user") {
            return next.run(call);
        }
        Box::pin(async { Err(Error::new(ErrorCode::Unauthenticated, "who are you?")) })
    }

    fn on_stream_open(&self, ctx: &mut RequestContext) -> psrpc::Result<()> {
        match ctx.metadata().contains_key("user") {
            true => Ok(()),
            false => Err(Error::new(ErrorCode::Unauthenticated, "no stream for you")),
        }
    }
}

impl ClientInterceptor for Deny {
    fn intercept(&self, _call: ClientCall, _next: ClientNext) -> BoxResponse {
        Box::pin(async { Err(Error::new(ErrorCode::FailedPrecondition, "not sent")) })
    }
}

#[tokio::test(start_paused = true)]
async fn interceptors_short_circuit_with_an_error() {
    let local = LocalBus::new();
    let log = Log::default();
    let _server = path_server(
        &local,
        ServerOptions::default().interceptor(Deny),
        log.clone(),
    )
    .await;
    let client = Client::new(SVC, local.clone()).await.unwrap();
    let err = client
        .request::<_, String>(ECHO, &[], &String::new(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    assert!(log.lock().unwrap().is_empty(), "the handler never ran");
    let ok: String = client
        .request(
            ECHO,
            &[],
            &String::new(),
            CallOptions::new().metadata("user", "u"),
        )
        .await
        .unwrap();
    assert_eq!(ok, "");

    // A client interceptor that short-circuits sends nothing at all.
    let recording = RecordingBus::new(local);
    let denied = Client::with_options(
        SVC,
        recording.clone(),
        ClientOptions::default().interceptor(Deny),
    )
    .await
    .unwrap();
    let err = denied
        .request::<_, String>(ECHO, &[], &String::new(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert!(recording.kinds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stream_interceptors_refuse_and_observe() {
    let bus = LocalBus::new();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let seen = closed.clone();
    struct CloseLog(Arc<Mutex<Vec<String>>>);
    impl ServerInterceptor for CloseLog {
        fn on_stream_close(&self, ctx: &RequestContext, result: &psrpc::Result<()>) {
            let outcome = result
                .as_ref()
                .map_or_else(|e| e.code().to_string(), |()| "ok".into());
            // A stream is told apart from a unary call by its method's kind.
            let kind = if ctx.method().is_stream() {
                "stream"
            } else {
                "unary"
            };
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {kind} {outcome}", ctx.method().name()));
        }
    }
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default()
            .interceptor(Deny)
            .interceptor(CloseLog(seen)),
    );
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                let msg = stream.recv().await.unwrap()?;
                stream.send(&msg).await?;
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let err = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::new(ErrorCode::Unauthenticated, "no stream for you")
    );
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new().metadata("user", "u"))
        .await
        .unwrap();
    stream.send(&"hi".to_string()).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), "hi");
    assert_eq!(stream.recv().await, None);
    assert_eq!(*closed.lock().unwrap(), ["Chat stream ok"]);
}

#[tokio::test(start_paused = true)]
async fn hooks_observe_requests_and_results() {
    let bus = LocalBus::new();
    let seen = Log::default();
    let (on_req, on_resp) = (seen.clone(), seen.clone());
    let hooks = Hooks::new()
        .on_request(move |call| {
            on_req
                .lock()
                .unwrap()
                .push(format!("req {} bytes", call.request.len()))
        })
        .on_response(move |ctx, outcome| {
            let what = match outcome {
                Ok(bytes) => format!("ok {} bytes", bytes.len()),
                Err(err) => err.code().to_string(),
            };
            on_resp
                .lock()
                .unwrap()
                .push(format!("{} {what}", ctx.method().name()));
        });
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().interceptor(hooks),
    );
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            if req.is_empty() {
                Err(Error::new(ErrorCode::InvalidArgument, "empty"))
            } else {
                Ok(req)
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let _: String = client
        .request(ECHO, &[], &"abc".to_string(), CallOptions::new())
        .await
        .unwrap();
    let _ = client
        .request::<_, String>(ECHO, &[], &String::new(), CallOptions::new())
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "req 5 bytes",
            "Echo ok 5 bytes",
            "req 0 bytes",
            "Echo invalid_argument"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_becomes_internal_and_the_server_keeps_serving() {
    let bus = LocalBus::new();
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().interceptor(RecoverPanics),
    );
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            if req == "boom" {
                panic!("handler exploded");
            }
            Ok(req)
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = client
        .request::<_, String>(ECHO, &[], &"boom".to_string(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(
        started.elapsed() < Duration::from_millis(1),
        "answered, not timed out"
    );
    let ok: String = client
        .request(ECHO, &[], &"fine".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(ok, "fine");
    assert_eq!(server.in_flight(), 0);
}

/// A server failing its first `failures` calls with `code`.
async fn flaky_server(bus: &LocalBus, failures: usize, code: ErrorCode) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err(Error::new(code, "try again"))
                } else {
                    Ok(req)
                }
            }
        })
        .await
        .unwrap();
    std::mem::forget(server);
    calls
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_errors_with_bounded_attempts() {
    let bus = LocalBus::new();
    let calls = flaky_server(&bus, 2, ErrorCode::Unavailable).await;
    let retrying = ClientOptions::default().interceptor(Retry::new(3));
    let client = Client::with_options(SVC, bus.clone(), retrying.clone())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let ok: String = client
        .request(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(ok, "x");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two backoffs: about 50 ms and 100 ms, each within ±20 %.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(120) && waited <= Duration::from_millis(180),
        "{waited:?}"
    );

    let bus = LocalBus::new();
    let calls = flaky_server(&bus, 10, ErrorCode::Unavailable).await;
    let client = Client::with_options(SVC, bus, retrying.clone())
        .await
        .unwrap();
    let err = client
        .request::<_, String>(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "at most three attempts");

    let bus = LocalBus::new();
    let calls = flaky_server(&bus, 10, ErrorCode::InvalidArgument).await;
    let client = Client::with_options(SVC, bus, retrying).await.unwrap();
    let err = client
        .request::<_, String>(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not retryable: one attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_sheds_past_the_burst_and_refills() {
    let bus = LocalBus::new();
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().interceptor(RateLimit::new(10.0, 2)),
    );
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let x = "x".to_string();
    let call = || client.request::<_, String>(ECHO, &[], &x, CallOptions::new());
    assert!(call().await.is_ok());
    assert!(call().await.is_ok());
    assert_eq!(
        call().await.unwrap_err().code(),
        ErrorCode::ResourceExhausted
    );
    // One token comes back every 100 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(call().await.is_ok());
    assert_eq!(
        call().await.unwrap_err().code(),
        ErrorCode::ResourceExhausted
    );
}

#[tokio::test(start_paused = true)]
async fn tower_middleware_limits_concurrency_and_times_out() {
    let bus = LocalBus::new();
    let layer = TowerLayer::new(
        tower::ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(1)
            .timeout(Duration::from_millis(300)),
    );
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().interceptor(layer),
    );
    let release = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| {
            let (release, entered) = (r.clone(), e.clone());
            async move {
                entered.notify_one();
                if req == "hold" {
                    release.notified().await;
                }
                Ok(req)
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request::<_, String>(ECHO, &[], &"hold".to_string(), CallOptions::new())
                .await
        }
    });
    entered.notified().await;
    let err = client
        .request::<_, String>(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::ResourceExhausted,
        "shed while the only slot is taken"
    );
    // The held call outlives tower's 300 ms timeout.
    assert_eq!(
        held.await.unwrap().unwrap_err().code(),
        ErrorCode::DeadlineExceeded
    );
    let ok: String = client
        .request(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(ok, "x");
}

#[tokio::test(start_paused = true)]
async fn observers_get_an_event_per_call_on_both_sides() {
    let bus = LocalBus::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let observe = Observe::new(move |e: &CallEvent<'_>| {
        sink.lock().unwrap().push((
            e.role,
            e.kind,
            e.method.to_owned(),
            e.request_bytes,
            e.response_bytes,
            e.error.map(|c| c.to_string()),
        ));
    });
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().interceptor(observe.clone()),
    );
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            if req == "bad" {
                Err(Error::new(ErrorCode::NotFound, "nope"))
            } else {
                Ok(req)
            }
        })
        .await
        .unwrap();
    server
        .register_unary(GATHER, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = Client::with_options(SVC, bus, ClientOptions::default().interceptor(observe))
        .await
        .unwrap();
    let _: String = client
        .request(ECHO, &[], &"abc".to_string(), CallOptions::new())
        .await
        .unwrap();
    let _ = client
        .request::<_, String>(ECHO, &[], &"bad".to_string(), CallOptions::new())
        .await;
    let answers: Vec<_> = client
        .request_multi::<_, String>(GATHER, &[], &"m".to_string(), CallOptions::new())
        .await
        .unwrap()
        .take(1)
        .collect()
        .await;
    assert_eq!(answers.len(), 1);
    let events = events.lock().unwrap().clone();
    let nf = Some("not_found".to_string());
    assert_eq!(
        events,
        [
            (Role::Server, CallKind::Unary, "Echo".into(), 5, 5, None),
            (Role::Client, CallKind::Unary, "Echo".into(), 5, 5, None),
            (
                Role::Server,
                CallKind::Unary,
                "Echo".into(),
                5,
                0,
                nf.clone()
            ),
            (Role::Client, CallKind::Unary, "Echo".into(), 5, 0, nf),
            (Role::Server, CallKind::Multi, "Gather".into(), 3, 3, None),
            (Role::Client, CallKind::Multi, "Gather".into(), 3, 3, None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_trace_continues_across_two_hops() {
    const FRONT: &str = "Front";
    const BACK: &str = "Back";
    let bus = LocalBus::new();
    let back_seen = Arc::new(Mutex::new(None::<String>));
    let back = Server::new(BACK, bus.clone());
    let seen = back_seen.clone();
    back.register_unary(ECHO, &[], move |ctx, _req: String| {
        *seen.lock().unwrap() = ctx.metadata().get(TRACEPARENT).cloned();
        async move { Ok(ctx.trace().map(TraceContext::trace_id).unwrap_or_default()) }
    })
    .await
    .unwrap();
    let front = Server::new(FRONT, bus.clone());
    let to_back = Client::new(BACK, bus.clone()).await.unwrap();
    front
        .register_unary(ECHO, &[], move |ctx, req: String| {
            let to_back = to_back.clone();
            async move {
                let front_span = ctx.trace().expect("a traced request").span_id();
                // A call made while serving continues the trace.
                let back_trace: String =
                    to_back.request(ECHO, &[], &req, CallOptions::new()).await?;
                Ok(format!("{back_trace} {front_span}"))
            }
        })
        .await
        .unwrap();
    let caller = Client::with_options(FRONT, bus, ClientOptions::default().start_traces(true))
        .await
        .unwrap();
    let reply: String = caller
        .request(ECHO, &[], &"x".to_string(), CallOptions::new())
        .await
        .unwrap();
    let (back_trace, front_span) = reply.split_once(' ').unwrap();
    let back_parent = TraceContext::parse(&back_seen.lock().unwrap().clone().unwrap()).unwrap();
    assert_eq!(
        back_parent.trace_id(),
        back_trace,
        "same trace at the second hop"
    );
    assert_ne!(
        back_parent.span_id(),
        front_span,
        "a new span for the outgoing call"
    );

    // An explicit traceparent from the caller is kept.
    let explicit = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply: String = caller
        .request(
            ECHO,
            &[],
            &"x".to_string(),
            CallOptions::new().metadata(TRACEPARENT, explicit),
        )
        .await
        .unwrap();
    assert!(
        reply.starts_with("0af7651916cd43dd8448eb211c80319c "),
        "{reply}"
    );
}
