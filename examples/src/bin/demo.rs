//! A tour of psrpc on one bus: a queue call, an affinity call, a multi call across a fleet,
//! a topic call per region, and a subscription.
//!
//! Run: `cargo run -p psrpc-examples --bin demo [-- --bus nats://127.0.0.1:4222]`

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use psrpc::{CallOptions, Client, Error, ErrorCode, MethodInfo, Server};

const SERVICE: &str = "Demo";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const STATS: MethodInfo = MethodInfo::multi("Stats");
const REGION_ECHO: MethodInfo = MethodInfo::unary("RegionEcho");
const NEWS: MethodInfo = MethodInfo::subscription("News", false);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = psrpc_examples::bus_from_args().await?;
    println!("bus: {}", bus.name());

    // Three servers, each with a load figure and a region.
    let mut servers = Vec::new();
    for (load, region) in [(0.7_f32, "eu-west"), (0.2, "us-east"), (0.5, "eu-west")] {
        let server = Server::new(SERVICE, bus.clone());
        server
            .register_unary(ECHO, &[], |ctx, text: String| async move {
                Ok(format!("{text} (from {})", ctx.server_id()))
            })
            .await?;
        // The least loaded server has the highest affinity and wins the call.
        server
            .register_unary_with_affinity(
                PICK,
                &[],
                |ctx, _job: String| async move { Ok(ctx.server_id().to_owned()) },
                Arc::new(move |_job: &String| 1.0 - load),
            )
            .await?;
        server
            .register_unary(STATS, &[], move |ctx, _q: ()| async move {
                if load > 0.6 {
                    return Err(Error::new(ErrorCode::Unavailable, "too busy to report"));
                }
                Ok(format!("{} load={load}", ctx.server_id()))
            })
            .await?;
        server
            .register_unary(
                REGION_ECHO,
                &[region],
                move |ctx, text: String| async move {
                    Ok(format!("{text} served in {region} by {}", ctx.server_id()))
                },
            )
            .await?;
        servers.push(server);
    }

    let client = Client::new(SERVICE, bus.clone()).await?;

    let reply: String = client
        .request(&ECHO, &[], &"hello".to_string(), CallOptions::new())
        .await?;
    println!("queue call:    {reply}");

    let chosen: String = client
        .request(&PICK, &[], &"render".to_string(), CallOptions::new())
        .await?;
    println!("affinity call: least loaded server is {chosen}");

    println!("multi call:");
    let mut answers = client
        .request_multi::<(), String>(
            &STATS,
            &[],
            &(),
            CallOptions::new().timeout(Duration::from_millis(500)),
        )
        .await?;
    while let Some(answer) = answers.next().await {
        match answer.result {
            Ok(stats) => println!("  {stats}"),
            Err(err) => println!("  {} failed: {err}", answer.server_id),
        }
    }

    for region in ["eu-west", "us-east"] {
        let reply: String = client
            .request(
                &REGION_ECHO,
                &[region],
                &"ping".to_string(),
                CallOptions::new(),
            )
            .await?;
        println!("topic call:    {reply}");
    }

    let mut news = client.subscribe::<String>(&NEWS, &[]).await?;
    servers[0]
        .publish(&NEWS, &[], &"psrpc speaks Go's wire format".to_string())
        .await?;
    println!("subscription:  {}", news.recv().await.unwrap_or_default());

    for server in &servers {
        server.shutdown().await;
    }
    Ok(())
}
