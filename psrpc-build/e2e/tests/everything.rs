//! The generated `Everything` service end to end on the in-process bus: every option.

use std::time::Duration;

use futures::StreamExt;
use psrpc::batch::{BatchEnd, BatchError, BatchOptions};
use psrpc::bus::LocalBus;
use psrpc::prost::Name;
use psrpc::stream::Stream;
use psrpc::{CallOptions, Error, ErrorCode, RequestContext};
use psrpc_build_e2e::everything::{
    EchoReply, EchoRequest, EverythingClient, EverythingServer, EverythingServerImpl, Update,
    everything_methods, update,
};

/// A server that tags its answers with its name and claims with a fixed affinity.
struct Node {
    name: &'static str,
    affinity: f32,
}

impl Node {
    fn reply(&self, req: EchoRequest) -> psrpc::Result<EchoReply> {
        Ok(EchoReply {
            text: req.text,
            server: self.name.to_owned(),
        })
    }
}

impl EverythingServerImpl for Node {
    async fn echo(&self, _ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    // Generated without default stubs, a server implements every method, as in Go; one it
    // cannot serve answers `unimplemented` explicitly.
    async fn missing(&self, _ctx: RequestContext, _req: EchoRequest) -> psrpc::Result<EchoReply> {
        Err(psrpc::Error::unimplemented("Missing"))
    }

    async fn broadcast(&self, _ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    async fn pick(&self, _ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    fn pick_affinity(&self, _req: &EchoRequest) -> f32 {
        self.affinity
    }

    async fn region_echo(&self, ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        let mut reply = self.reply(req)?;
        reply.text = format!("{}@{}", reply.text, ctx.topics().join("/"));
        Ok(reply)
    }

    async fn region_broadcast(
        &self,
        _ctx: RequestContext,
        req: EchoRequest,
    ) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    async fn node_echo(&self, ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        let mut reply = self.reply(req)?;
        reply.text = format!("{}@{}", reply.text, ctx.topics().join("/"));
        Ok(reply)
    }

    async fn pick_on_topic(
        &self,
        _ctx: RequestContext,
        req: EchoRequest,
    ) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    fn pick_on_topic_affinity(&self, req: &EchoRequest) -> f32 {
        req.affinity * self.affinity
    }

    async fn chat(
        &self,
        ctx: RequestContext,
        mut stream: Stream<EchoReply, EchoRequest>,
    ) -> psrpc::Result<()> {
        while let Some(req) = stream.recv().await {
            let mut reply = self.reply(req?)?;
            reply.text = format!("{}@{}", reply.text, ctx.topics().join("/"));
            stream.send(&reply).await?;
        }
        Ok(())
    }

    async fn room_chat(
        &self,
        ctx: RequestContext,
        stream: Stream<EchoReply, EchoRequest>,
    ) -> psrpc::Result<()> {
        self.chat(ctx, stream).await
    }

    async fn old_pick(&self, _ctx: RequestContext, req: EchoRequest) -> psrpc::Result<EchoReply> {
        self.reply(req)
    }

    fn old_pick_affinity(&self, _req: &EchoRequest) -> f32 {
        self.affinity
    }
}

fn node(name: &'static str, affinity: f32) -> Node {
    Node { name, affinity }
}

fn req(text: &str) -> EchoRequest {
    EchoRequest {
        text: text.to_owned(),
        affinity: 1.0,
    }
}

fn short() -> CallOptions {
    CallOptions::new().timeout(Duration::from_millis(300))
}

/// Guards a receive so a failing test ends instead of hanging.
async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("timed out")
}

type Client = EverythingClient;
type Server = EverythingServer<Node>;

#[tokio::test]
async fn unary_call_and_default_unimplemented() {
    let bus = LocalBus::new();
    let _server = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    let reply = client.echo(&req("hi"), CallOptions::new()).await.unwrap();
    assert_eq!((reply.text.as_str(), reply.server.as_str()), ("hi", "a"));

    let err = client
        .missing(&req("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unimplemented);
}

#[tokio::test]
async fn multi_reaches_every_server() {
    let bus = LocalBus::new();
    let _a = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let _b = Server::new(node("b", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    let answers = client
        .broadcast(&req("all"), short())
        .await
        .unwrap()
        .collect_all()
        .await;
    let mut servers: Vec<String> = answers
        .into_iter()
        .map(|a| a.result.unwrap().server)
        .collect();
    servers.sort();
    assert_eq!(servers, ["a", "b"]);
}

#[tokio::test]
async fn affinity_picks_the_best_claim_with_either_spelling() {
    let bus = LocalBus::new();
    let _low = Server::new(node("low", 0.2), bus.clone()).await.unwrap();
    let _high = Server::new(node("high", 0.9), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    let reply = client.pick(&req("p"), CallOptions::new()).await.unwrap();
    assert_eq!(reply.server, "high");
    // `affinity_func = true` routes like `type = AFFINITY`.
    let reply = client
        .old_pick(&req("p"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.server, "high");
}

#[tokio::test]
async fn topic_methods_register_and_deregister() {
    let bus = LocalBus::new();
    let server = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    server.register_region_echo_topic("eu").await.unwrap();
    let reply = client
        .region_echo("eu", &req("hi"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.text, "hi@eu");
    assert!(client.region_echo("us", &req("hi"), short()).await.is_err());

    assert!(server.deregister_region_echo_topic("eu"));
    assert!(!server.deregister_region_echo_topic("eu"));
    assert!(client.region_echo("eu", &req("hi"), short()).await.is_err());

    // The default topic parameter `topic`, with affinity from the request.
    server.register_pick_on_topic_topic("t").await.unwrap();
    let reply = client
        .pick_on_topic("t", &req("p"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.server, "a");
}

#[tokio::test]
async fn topic_group_registers_all_its_methods() {
    let bus = LocalBus::new();
    let a = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let b = Server::new(node("b", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    a.register_all_region_topics("eu").await.unwrap();
    b.register_all_region_topics("eu").await.unwrap();
    assert!(
        a.server()
            .is_registered(everything_methods::REGION_ECHO, &["eu"])
    );
    assert!(
        a.server()
            .is_registered(everything_methods::REGION_BROADCAST, &["eu"])
    );
    // A second registration fails as a whole and leaves the first in place.
    assert_eq!(
        a.register_all_region_topics("eu").await.unwrap_err().code(),
        ErrorCode::AlreadyExists
    );
    assert!(
        a.server()
            .is_registered(everything_methods::REGION_ECHO, &["eu"])
    );

    let reply = client
        .region_echo("eu", &req("g"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.text, "g@eu");
    let answers = client
        .region_broadcast("eu", &req("g"), short())
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(answers.len(), 2);

    a.deregister_all_region_topics("eu");
    assert!(
        !a.server()
            .is_registered(everything_methods::REGION_ECHO, &["eu"])
    );
    assert!(
        !a.server()
            .is_registered(everything_methods::REGION_BROADCAST, &["eu"])
    );
}

/// A string-like topic type of the caller's own, as typed topics allow.
struct NodeId(String);

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[tokio::test]
async fn typed_topics_take_string_like_types() {
    let bus = LocalBus::new();
    let server: EverythingServer<Node, str, NodeId> =
        EverythingServer::new(node("a", 1.0), bus.clone())
            .await
            .unwrap();
    let client: EverythingClient<str, NodeId> = EverythingClient::new(bus).await.unwrap();
    let id = NodeId("n1".into());

    server.register_node_echo_topic("eu", &id).await.unwrap();
    let reply = client
        .node_echo("eu", &id, &req("t"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.text, "t@eu/n1");
    assert!(server.deregister_node_echo_topic("eu", &id));
}

#[tokio::test]
async fn subscriptions_fan_out_and_queue() {
    let bus = LocalBus::new();
    let server = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    // Fan-out: every subscriber gets every message, nested types included.
    let mut first = client.subscribe_updates().await.unwrap();
    let mut second = client.subscribe_updates().await.unwrap();
    let update = Update {
        text: "u".into(),
        detail: Some(update::Detail { n: 7 }),
    };
    server.publish_updates(&update).await.unwrap();
    assert_eq!(within(first.recv()).await, Some(update.clone()));
    assert_eq!(within(second.recv()).await, Some(update));

    // Queue on a topic: each message goes to one subscriber.
    let mut q1 = client.subscribe_jobs("work").await.unwrap();
    let mut q2 = client.subscribe_jobs("work").await.unwrap();
    for n in 0..2 {
        let job = Update {
            text: format!("job{n}"),
            detail: None,
        };
        server.publish_jobs("work", &job).await.unwrap();
    }
    let mut got = vec![
        within(q1.recv()).await.unwrap().text,
        within(q2.recv()).await.unwrap().text,
    ];
    got.sort();
    assert_eq!(got, ["job0", "job1"]);

    // A well-known type, with the deprecated `multi = true` spelling.
    let mut notes = client.subscribe_notes().await.unwrap();
    server.publish_notes(&"note".to_owned()).await.unwrap();
    assert_eq!(within(notes.next()).await.as_deref(), Some("note"));
}

#[tokio::test]
async fn streams_with_and_without_topics() {
    let bus = LocalBus::new();
    let server = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    let mut chat = client.chat(CallOptions::new()).await.unwrap();
    for text in ["one", "two"] {
        chat.send(&req(text)).await.unwrap();
        let reply = within(chat.recv()).await.unwrap().unwrap();
        assert_eq!(
            (reply.text.as_str(), reply.server.as_str()),
            (format!("{text}@").as_str(), "a")
        );
    }
    chat.close(None).await.unwrap();

    server.register_room_chat_topic("lobby").await.unwrap();
    let mut room = client.room_chat("lobby", CallOptions::new()).await.unwrap();
    room.send(&req("hi")).await.unwrap();
    assert_eq!(within(room.recv()).await.unwrap().unwrap().text, "hi@lobby");
    room.close(None).await.unwrap();
    assert!(server.deregister_room_chat_topic("lobby"));
}

#[tokio::test]
async fn method_infos_follow_the_options() {
    use everything_methods as m;
    use psrpc::MethodInfo;

    assert_eq!(m::SERVICE, "Everything");
    assert_eq!(m::ECHO, MethodInfo::unary("Echo"));
    assert_eq!(m::BROADCAST, MethodInfo::multi("Broadcast"));
    assert_eq!(m::PICK, MethodInfo::affinity("Pick"));
    assert_eq!(m::OLD_PICK, MethodInfo::affinity("OldPick"));
    assert_eq!(m::REGION_ECHO, MethodInfo::unary("RegionEcho"));
    assert_eq!(m::REGION_BROADCAST, MethodInfo::multi("RegionBroadcast"));
    assert_eq!(
        m::NODE_ECHO,
        MethodInfo::new(
            "NodeEcho",
            psrpc::MethodKind::Unary(psrpc::Dispatch::SingleServer)
        )
    );
    assert_eq!(m::PICK_ON_TOPIC, MethodInfo::affinity("PickOnTopic"));
    assert_eq!(m::UPDATES, MethodInfo::subscription("Updates"));
    assert_eq!(m::JOBS, MethodInfo::queue_subscription("Jobs"));
    assert_eq!(m::NOTES, MethodInfo::subscription("Notes"));
    assert_eq!(m::CHAT, MethodInfo::stream("Chat"));
    assert_eq!(
        m::ROOM_CHAT,
        MethodInfo::new(
            "RoomChat",
            psrpc::MethodKind::Stream(psrpc::Dispatch::SingleServer)
        )
    );
}

#[tokio::test]
async fn generated_messages_know_their_names() {
    assert_eq!(EchoRequest::full_name(), "everything.EchoRequest");
    assert_eq!(Update::full_name(), "everything.Update");
    assert_eq!(update::Detail::full_name(), "everything.Update.Detail");
    // Go's anypb type URLs, so details packed here read the same in Go.
    assert_eq!(
        update::Detail::type_url(),
        "type.googleapis.com/everything.Update.Detail"
    );
    let detail = update::Detail { n: 7 };
    let err = Error::new(ErrorCode::NotFound, "gone").with_detail(detail);
    assert_eq!(
        err.details()[0].type_url,
        "type.googleapis.com/everything.Update.Detail"
    );
    assert_eq!(err.detail::<update::Detail>(), Some(Ok(detail)));
    assert_eq!(err.detail::<Update>(), None);
}

#[tokio::test]
async fn shutdown_and_kill_stop_serving() {
    let bus = LocalBus::new();
    let a = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus.clone()).await.unwrap();
    client.echo(&req("x"), CallOptions::new()).await.unwrap();
    a.shutdown().await;
    assert!(client.echo(&req("x"), short()).await.is_err());
    assert_eq!(
        a.register_region_echo_topic("eu").await.unwrap_err().code(),
        ErrorCode::Unavailable
    );

    let b = Server::new(node("b", 1.0), bus).await.unwrap();
    client.echo(&req("y"), CallOptions::new()).await.unwrap();
    b.kill().await;
    assert!(client.echo(&req("y"), short()).await.is_err());
}

#[tokio::test]
async fn generated_queue_batch_spreads_over_the_servers_with_indices() {
    let bus = LocalBus::new();
    let _a = Server::new(node("a", 1.0), bus.clone()).await.unwrap();
    let _b = Server::new(node("b", 1.0), bus.clone()).await.unwrap();
    let client: Client = EverythingClient::new(bus).await.unwrap();

    const TASKS: usize = 40;
    let requests: Vec<EchoRequest> = (0..TASKS).map(|i| req(&format!("t{i}"))).collect();
    let mut batch = client
        .batch_echo(requests.clone(), BatchOptions::new().max_in_flight(8))
        .await
        .unwrap();
    let mut seen = [false; TASKS];
    while let Some(item) = within(batch.next_item()).await {
        assert_eq!(item.key, item.index);
        assert!(!seen[item.index], "task {} yielded twice", item.index);
        seen[item.index] = true;
        let reply = item.result.unwrap();
        assert_eq!(reply.text, format!("t{}", item.index));
        assert!(["a", "b"].contains(&reply.server.as_str()));
    }
    assert!(seen.iter().all(|s| *s), "missing tasks");
    assert_eq!(batch.end(), Some(BatchEnd::Completed));
    let progress = batch.progress();
    assert_eq!((progress.done, progress.failed), (TASKS, 0));
    assert_eq!(progress.outstanding(), 0);

    // Collected, the replies come back in input order.
    let replies = within(
        client
            .batch_echo(requests, BatchOptions::new())
            .await
            .unwrap()
            .try_collect(),
    )
    .await
    .unwrap();
    let texts: Vec<String> = replies.into_iter().map(|r| r.text).collect();
    let expected: Vec<String> = (0..TASKS).map(|i| format!("t{i}")).collect();
    assert_eq!(texts, expected);

    // An empty batch is refused before anything is sent.
    let err = client
        .batch_echo(Vec::new(), BatchOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BatchError::Empty));
}
