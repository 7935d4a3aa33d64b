//! A tour of psrpc through the code generated from `proto/demo.proto`: a queue call, an
//! affinity call, a multi call across a fleet (one server fails), a topic call per region, a
//! subscription and a bidirectional stream.
//!
//! Run: `cargo run -p psrpc-examples --bin demo [-- --bus nats://127.0.0.1:4222]`; with
//! `--role server` in one terminal and `--role client` in another, the fleet and the caller run
//! as two processes (`--help` for the options).

use std::sync::Arc;
use std::time::Duration;

use psrpc::bus::Bus;
use psrpc::stream::Stream;
use psrpc::{CallOptions, Error, ErrorCode, RequestContext};
use psrpc_examples::Role;
use psrpc_examples::demo::{
    DemoClient, DemoServer, DemoServerImpl, Job, News, Reply, Stats, StatsRequest, Text,
};

/// One server of the demo fleet.
struct Node {
    load: f32,
}

impl Node {
    fn reply(ctx: &RequestContext, text: String) -> Reply {
        Reply {
            text,
            server_id: ctx.server_id().to_owned(),
        }
    }
}

impl DemoServerImpl for Node {
    async fn echo(&self, ctx: RequestContext, req: Text) -> psrpc::Result<Reply> {
        Ok(Self::reply(&ctx, req.text))
    }

    async fn place(&self, ctx: RequestContext, job: Job) -> psrpc::Result<Reply> {
        Ok(Self::reply(&ctx, format!("{} placed", job.name)))
    }

    // The least loaded server has the highest affinity and wins the call.
    fn place_affinity(&self, _job: &Job) -> f32 {
        1.0 - self.load
    }

    async fn get_stats(&self, ctx: RequestContext, _req: StatsRequest) -> psrpc::Result<Stats> {
        if self.load > 0.6 {
            return Err(Error::new(ErrorCode::Unavailable, "too busy to report"));
        }
        Ok(Stats {
            server_id: ctx.server_id().to_owned(),
            load: self.load,
        })
    }

    async fn region_echo(&self, ctx: RequestContext, req: Text) -> psrpc::Result<Reply> {
        let region = ctx.topics().join("/");
        Ok(Self::reply(
            &ctx,
            format!("{} served in {region}", req.text),
        ))
    }

    async fn chat(
        &self,
        ctx: RequestContext,
        mut stream: Stream<Reply, Text>,
    ) -> psrpc::Result<()> {
        // Answers each message until the caller closes its end.
        while let Some(msg) = stream.recv().await {
            let text = msg?.text.to_uppercase();
            stream.send(&Self::reply(&ctx, text)).await?;
        }
        Ok(())
    }
}

const ABOUT: &str = "A tour of psrpc: a queue call, an affinity call, a multi call across a \
fleet (one server fails), a topic call per region, a subscription and a bidirectional stream.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("demo", ABOUT);
    let bus = psrpc_examples::connect_or_exit(&args).await;
    println!("bus: {}", bus.name());
    let servers = if args.role.serves() {
        start_fleet(&bus).await?
    } else {
        Vec::new()
    };
    match args.role {
        Role::Both => call(&bus, servers.first()).await?,
        Role::Client => call(&bus, None).await?,
        Role::Server => {
            // The news a separate caller subscribes to: one headline a second.
            let news = servers[0].clone();
            let publisher = tokio::spawn(async move {
                loop {
                    let _ = news.publish_news(&headline()).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            psrpc_examples::serve_until_stopped("node-a, node-b and node-c").await;
            publisher.abort();
        }
    }
    for server in &servers {
        server.shutdown().await;
    }
    println!("done");
    Ok(())
}

/// Three servers, each with a load figure and a region.
async fn start_fleet(bus: &Arc<dyn Bus>) -> psrpc::Result<Vec<DemoServer<Node>>> {
    let mut servers = Vec::new();
    for (id, load, region) in [
        ("node-a", 0.7_f32, "eu-west"),
        ("node-b", 0.2, "us-east"),
        ("node-c", 0.5, "eu-west"),
    ] {
        let server =
            DemoServer::with_options(Node { load }, bus.clone(), psrpc_examples::named(id)).await?;
        server.register_region_echo_topic(region).await?;
        servers.push(server);
    }
    Ok(servers)
}

fn headline() -> News {
    News {
        headline: "psrpc speaks Go's wire format".into(),
    }
}

/// Every kind of call; `news_from` publishes the news when the fleet runs in this process
/// (otherwise the server process publishes it every second).
async fn call(
    bus: &Arc<dyn Bus>,
    news_from: Option<&DemoServer<Node>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let client: DemoClient = DemoClient::new(bus.clone()).await?;

    let reply = client.echo(&text("hello"), CallOptions::new()).await?;
    println!("queue call:    {} (from {})", reply.text, reply.server_id);

    let job = Job {
        name: "render".into(),
    };
    let reply = client.place(&job, CallOptions::new()).await?;
    println!(
        "affinity call: {} on {}, the least loaded server",
        reply.text, reply.server_id
    );

    // A multi call waits for answers until its timeout: keep it short.
    let mut answers = client
        .get_stats(
            &StatsRequest {},
            CallOptions::new().timeout(Duration::from_millis(400)),
        )
        .await?
        .collect_all()
        .await;
    answers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    println!("multi call:    {} servers answered", answers.len());
    for answer in answers {
        match answer.result {
            Ok(stats) => println!("  {} load={:.1}", stats.server_id, stats.load),
            Err(err) => println!("  {} failed: {err}", answer.server_id),
        }
    }

    for region in ["eu-west", "us-east"] {
        let reply = client
            .region_echo(region, &text("ping"), CallOptions::new())
            .await?;
        println!("topic call:    {} by {}", reply.text, reply.server_id);
    }

    // Subscribing returns once the subscription is live, so the publish cannot be missed.
    let mut news = client.subscribe_news().await?;
    if let Some(server) = news_from {
        server.publish_news(&headline()).await?;
    }
    let headline = tokio::time::timeout(Duration::from_secs(5), news.recv())
        .await
        .map_err(|_| "no news within 5 s: is the server process running?")?
        .map(|n| n.headline)
        .unwrap_or_default();
    println!("subscription:  {headline}");

    let mut chat = client.chat(CallOptions::new()).await?;
    for line in ["hello", "stream"] {
        chat.send(&text(line)).await?;
        if let Some(reply) = chat.recv().await {
            let reply = reply?;
            println!(
                "stream:        {line} -> {} (from {})",
                reply.text, reply.server_id
            );
        }
    }
    chat.close(None).await?;
    Ok(())
}

fn text(text: &str) -> Text {
    Text {
        text: text.to_owned(),
    }
}
