//! Every RPC kind between two servers and two clients, for the cluster tests (classic and
//! sharded pub/sub), whose buses are attached through different nodes.

use std::time::Duration;

use psrpc::stream::Stream;
use psrpc::{CallOptions, Client, MethodInfo, Server};
use psrpc_redis::RedisBus;

use super::within;

pub const ECHO: MethodInfo = MethodInfo::unary("Echo");
pub const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");
pub const CHAT: MethodInfo = MethodInfo::stream("Chat");
pub const EVENTS: MethodInfo = MethodInfo::subscription("Events");
pub const QUEUE_EVENTS: MethodInfo = MethodInfo::queue_subscription("QueueEvents");

/// A server of `service` answering `Echo` ("echo x"), `EchoAll` ("<server id> x") and the
/// `Chat` stream (echoes each message).
pub async fn serve(service: &str, bus: RedisBus) -> Server {
    let server = Server::new(service.to_owned(), bus);
    let id = server.id().to_owned();
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            Ok(format!("echo {req}"))
        })
        .await
        .unwrap();
    server
        .register_unary(ECHO_ALL, &[], move |_ctx, req: String| {
            let id = id.clone();
            async move { Ok(format!("{id} {req}")) }
        })
        .await
        .unwrap();
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream.send(&format!("echo {}", msg?)).await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    server
}

/// Unary calls (direct and claimed) from both clients, a multi call both servers answer, a
/// stream, a fan-out event both clients receive and queue events each delivered once.
pub async fn every_rpc_kind(clients: [&Client; 2], servers: [&Server; 2]) {
    for c in clients {
        for direct in [true, false] {
            for i in 0..10 {
                let reply: String = within(
                    "unary",
                    c.request(
                        ECHO,
                        &[],
                        &format!("{i}"),
                        CallOptions::new().direct(direct),
                    ),
                )
                .await
                .unwrap();
                assert_eq!(reply, format!("echo {i}"));
            }
        }
    }
    let [client, other] = clients;
    let [s1, s2] = servers;

    let results = within(
        "multi",
        client.request_multi::<String, String>(
            ECHO_ALL,
            &[],
            &"m".to_string(),
            CallOptions::new().timeout(Duration::from_millis(800)),
        ),
    )
    .await
    .unwrap()
    .collect_all()
    .await;
    let mut got: Vec<String> = results.into_iter().map(|r| r.result.unwrap()).collect();
    got.sort();
    let mut want = vec![format!("{} m", s1.id()), format!("{} m", s2.id())];
    want.sort();
    assert_eq!(got, want);

    let mut stream = within(
        "stream open",
        client.open_stream::<String, String>(CHAT, &[], CallOptions::new()),
    )
    .await
    .unwrap();
    for word in ["one", "two"] {
        stream.send(&word.to_string()).await.unwrap();
        let reply = within("stream echo", stream.recv()).await.unwrap().unwrap();
        assert_eq!(reply, format!("echo {word}"));
    }
    within("stream close", stream.close(None)).await.unwrap();

    let mut sub_a = client.subscribe::<String>(EVENTS, &["r"]).await.unwrap();
    let mut sub_b = other.subscribe::<String>(EVENTS, &["r"]).await.unwrap();
    s1.publish(EVENTS, &["r"], &"evt".to_string())
        .await
        .unwrap();
    for sub in [&mut sub_a, &mut sub_b] {
        assert_eq!(within("event", sub.recv()).await.as_deref(), Some("evt"));
    }

    let mut q_a = client.subscribe::<String>(QUEUE_EVENTS, &[]).await.unwrap();
    let mut q_b = other.subscribe::<String>(QUEUE_EVENTS, &[]).await.unwrap();
    for i in 0..6 {
        s2.publish(QUEUE_EVENTS, &[], &format!("q{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 6 {
        let msg = within("queue event", async {
            tokio::select! {
                m = q_a.recv() => m,
                m = q_b.recv() => m,
            }
        })
        .await
        .expect("subscription open");
        got.push(msg);
    }
    got.sort();
    assert_eq!(got, ["q0", "q1", "q2", "q3", "q4", "q5"]);
}
