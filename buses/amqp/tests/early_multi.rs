//! A multi call ended by `until(discovery.all_known(..))` gets every known server's answer on
//! AMQP, from the first call after discovery saw the server on.

use std::time::Duration;

use psrpc::discovery::Discovery;
use psrpc::{CallOptions, Client, MethodInfo, Server};
use psrpc_amqp::AmqpBus;
use psrpc_testkit::RabbitMqServer;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_multi_answers_from_the_first_call() {
    let url = RabbitMqServer::shared()
        .expect("rabbitmq-server")
        .fresh_url()
        .expect("a virtual host");
    let connect = || async { AmqpBus::connect(&url).await.expect("amqp bus") };
    let view = Discovery::new(connect().await).await.expect("discovery");
    for round in 0..20 {
        let service = format!("EarlyMulti{round}");
        let server = Server::new(service.clone(), connect().await);
        for method in [ECHO, GATHER] {
            server
                .register_unary(method, &[], |ctx, _req: String| async move {
                    Ok(ctx.server_id().to_owned())
                })
                .await
                .expect("register");
        }
        view.wait_for(Duration::from_secs(10), |d| {
            d.serving(&service, "Gather", &[]).len() == 1
        })
        .await
        .expect("discovery sees the server");
        let client = Client::new(service.clone(), connect().await)
            .await
            .expect("client");
        for call in 0..20 {
            let started = std::time::Instant::now();
            let results = client
                .request_multi::<_, String>(
                    GATHER,
                    &[],
                    &"ping".to_string(),
                    CallOptions::new().timeout(Duration::from_secs(10)),
                )
                .await
                .expect("publish")
                .until(view.all_known(&service, "Gather", &[]))
                .collect_all()
                .await;
            let answered = results.iter().filter(|r| r.result.is_ok()).count();
            assert_eq!(
                answered,
                1,
                "round {round} call {call} after {:?}: {results:?}",
                started.elapsed()
            );
        }
        server.shutdown().await;
    }
}
