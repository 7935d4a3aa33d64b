//! Partial servers (code generated with `generate_default_stubs(true)`): each server lists
//! the methods it implements and is registered for those only, so it never attracts calls it
//! cannot serve.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use psrpc::MethodInfo;
use psrpc::{Bus, CallOptions, ErrorCode, RequestContext};
use psrpc_build_e2e::partial::{
    Load, SplitClient, SplitServer, SplitServerImpl, Text, split_methods,
};
use psrpc_nats::NatsBus;
use psrpc_testkit::NatsServer;

/// Serves only `Echo` (and `RegionEcho` per region).
struct Echoer;

impl SplitServerImpl for Echoer {
    const SERVED: &'static [MethodInfo] = &[split_methods::ECHO, split_methods::REGION_ECHO];

    async fn echo(&self, _ctx: RequestContext, req: Text) -> psrpc::Result<Text> {
        Ok(req)
    }

    async fn region_echo(&self, ctx: RequestContext, req: Text) -> psrpc::Result<Text> {
        Ok(Text {
            text: format!("{} in {}", req.text, ctx.topics().join("/")),
        })
    }
}

/// Serves only `GetStats`.
struct Reporter;

impl SplitServerImpl for Reporter {
    const SERVED: &'static [MethodInfo] = &[split_methods::GET_STATS];

    async fn get_stats(&self, ctx: RequestContext, _req: Text) -> psrpc::Result<Load> {
        Ok(Load {
            server_id: ctx.server_id().to_owned(),
        })
    }
}

fn text(s: &str) -> Text {
    Text { text: s.to_owned() }
}

async fn two_partial_servers(server_bus: Arc<dyn Bus>, client_bus: Arc<dyn Bus>) {
    let echoer = SplitServer::new(Echoer, server_bus.clone()).await.unwrap();
    let reporter = SplitServer::new(Reporter, server_bus).await.unwrap();
    let client: SplitClient = SplitClient::new(client_bus).await.unwrap();

    for i in 0..20 {
        let req = text(&format!("hello {i}"));
        let resp = client.echo(&req, CallOptions::new()).await;
        assert_eq!(resp, Ok(req), "echo call {i}");
    }
    for i in 0..5 {
        let answers = client
            .get_stats(
                &text("load?"),
                CallOptions::new().timeout(Duration::from_millis(500)),
            )
            .await
            .unwrap()
            .collect::<Vec<_>>()
            .await;
        assert_eq!(answers.len(), 1, "get_stats call {i}: {answers:?}");
        assert_eq!(answers[0].server_id, reporter.server().id());
        let load = answers[0].result.as_ref().expect("a real answer");
        assert_eq!(load.server_id, reporter.server().id());
    }

    echoer.register_region_echo_topic("eu").await.unwrap();
    let resp = client
        .region_echo("eu", &text("hi"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(resp.text, "hi in eu");
    // The reporter does not serve RegionEcho: registering it is refused, not served badly.
    let err = reporter
        .register_region_echo_topic("eu")
        .await
        .expect_err("RegionEcho is not served by the reporter");
    assert_eq!(err.code(), ErrorCode::Unimplemented);
    echoer.shutdown().await;
    reporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_servers_on_nats() {
    let broker = NatsServer::start().expect("nats-server");
    let connect =
        || async { Arc::new(NatsBus::connect(broker.url()).await.unwrap()) as Arc<dyn Bus> };
    two_partial_servers(connect().await, connect().await).await;
}

#[tokio::test]
async fn partial_servers_on_the_local_bus() {
    let bus = psrpc::bus::LocalBus::new();
    two_partial_servers(Arc::new(bus.clone()), Arc::new(bus)).await;
}

/// Lists a method of another service.
struct Confused;

impl SplitServerImpl for Confused {
    const SERVED: &'static [MethodInfo] = &[split_methods::ECHO, MethodInfo::unary("Elsewhere")];
}

/// Lists a subscription, which servers publish and never handle.
struct Publisher;

impl SplitServerImpl for Publisher {
    const SERVED: &'static [MethodInfo] = &[split_methods::EVENTS];
}

#[test]
fn idempotency_level_marks_methods_idempotent() {
    assert_eq!(split_methods::ECHO, MethodInfo::unary("Echo").idempotent());
    assert_eq!(split_methods::GET_STATS, MethodInfo::multi("GetStats"));
}

#[tokio::test]
async fn served_lists_naming_no_handler_are_refused() {
    let bus = psrpc::bus::LocalBus::new();
    for err in [
        SplitServer::new(Confused, bus.clone())
            .await
            .map(drop)
            .unwrap_err(),
        SplitServer::new(Publisher, bus.clone())
            .await
            .map(drop)
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
        assert!(err.message().contains("SplitServerImpl::SERVED"), "{err}");
    }
    // Nothing was registered by the refused servers.
    assert_eq!(bus.channel_count(), 0);
}
