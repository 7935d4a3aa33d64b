//! A tour of psrpc through the code generated from `proto/demo.proto`: a queue call, an
//! affinity call, a multi call across a fleet (one server fails), a topic call per region, a
//! subscription and a bidirectional stream.
//!
//! Run: `cargo run -p psrpc-examples --bin demo [-- --bus nats://127.0.0.1:4222] [--serve]`
//! (`--serve` keeps the servers up after the tour, until Ctrl-C).

use std::time::Duration;

use psrpc::stream::Stream;
use psrpc::{CallOptions, Error, ErrorCode, RequestContext};
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = psrpc_examples::bus_or_exit().await;
    println!("bus: {}", bus.name());

    // Three servers, each with a load figure and a region.
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
    servers[0]
        .publish_news(&News {
            headline: "psrpc speaks Go's wire format".into(),
        })
        .await?;
    let headline = news.recv().await.map(|n| n.headline).unwrap_or_default();
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

    if std::env::args().any(|arg| arg == "--serve") {
        // Keeps the fleet up for `psrpc ls|info|stats|call` from another terminal.
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    for server in &servers {
        server.shutdown().await;
    }
    println!("done");
    Ok(())
}

fn text(text: &str) -> Text {
    Text {
        text: text.to_owned(),
    }
}
