//! Calls and events scoped to a region (a topic): servers register the regions they serve at
//! runtime, calls reach only the servers of the region named, subscribers of a region get only
//! its events, and a region that is deregistered no longer answers.
//!
//! Run: `cargo run -p psrpc-examples --bin regions [-- --bus nats://127.0.0.1:4222]`; with
//! `--role server` in one terminal and `--role client` in another, the servers and the caller
//! run as two processes (the caller then makes the calls per region; the events and the
//! runtime (de)registrations are steps of the one-process run; `--help` for the options).

use std::time::Duration;

use psrpc::{CallOptions, RequestContext};
use psrpc_examples::Role;
use psrpc_examples::regions::{
    LookupReply, LookupRequest, Presence, RegionEvent, RegionsClient, RegionsServer,
    RegionsServerImpl,
};

/// A server hosting some rooms in each region it serves.
struct Node {
    rooms: u32,
}

impl RegionsServerImpl for Node {
    async fn lookup(&self, ctx: RequestContext, req: LookupRequest) -> psrpc::Result<LookupReply> {
        Ok(LookupReply {
            room: req.room,
            region: ctx.topics().join("/"),
            node_id: ctx.server_id().to_owned(),
        })
    }

    async fn census(&self, ctx: RequestContext, _req: ()) -> psrpc::Result<Presence> {
        Ok(Presence {
            node_id: ctx.server_id().to_owned(),
            rooms: self.rooms,
        })
    }
}

/// Short calls: a region nobody serves fails within this time, and a census (a multi call)
/// listens this long.
fn short() -> CallOptions {
    CallOptions::new().timeout(Duration::from_millis(400))
}

async fn lookup(client: &RegionsClient, region: &str, room: &str) {
    let req = LookupRequest { room: room.into() };
    match client.lookup(region, &req, short()).await {
        Ok(reply) => println!(
            "  lookup {room} in {region}: answered by {} ({})",
            reply.node_id, reply.region
        ),
        Err(err) => println!("  lookup {room} in {region}: error: {err}"),
    }
}

async fn census(client: &RegionsClient, region: &str) -> psrpc::Result<()> {
    let mut answers = client
        .census(region, &(), short())
        .await?
        .collect_all()
        .await;
    answers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    let present: Vec<String> = answers
        .into_iter()
        .filter_map(|a| a.result.ok())
        .map(|p| format!("{} ({} rooms)", p.node_id, p.rooms))
        .collect();
    if present.is_empty() {
        println!("  census of {region}: no servers");
    } else {
        println!("  census of {region}: {}", present.join(", "));
    }
    Ok(())
}

fn event(region: &str, text: &str) -> RegionEvent {
    RegionEvent {
        region: region.into(),
        text: text.into(),
    }
}

const ABOUT: &str = "Calls and events scoped to a region (a topic): calls reach only the \
servers of the region named, a region registered at runtime answers, a deregistered one no longer \
does.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("regions", ABOUT);
    let bus = psrpc_examples::connect_or_exit(&args).await;
    println!("bus: {}", bus.name());

    if args.role == Role::Client {
        let client: RegionsClient = RegionsClient::new(bus.clone()).await?;
        println!("topic calls per region:");
        for region in ["eu-west", "us-east", "ap-south"] {
            lookup(&client, region, "lobby").await;
        }
        census(&client, "eu-west").await?;
        println!("done");
        return Ok(());
    }

    let mut servers = Vec::new();
    for (id, rooms, region) in [
        ("eu-1", 3, "eu-west"),
        ("eu-2", 5, "eu-west"),
        ("us-1", 4, "us-east"),
    ] {
        let server: RegionsServer<Node> =
            RegionsServer::with_options(Node { rooms }, bus.clone(), psrpc_examples::named(id))
                .await?;
        // Lookup and Census form topic group `region`: one registration serves both.
        server.register_all_region_topics(region).await?;
        println!("{id} serves {region}");
        servers.push(server);
    }
    if args.role == Role::Server {
        psrpc_examples::serve_until_stopped("eu-1, eu-2 and us-1").await;
        for server in &servers {
            server.shutdown().await;
        }
        return Ok(());
    }
    let [eu1, eu2, us1] = &servers[..] else {
        unreachable!("three servers")
    };
    let client: RegionsClient = RegionsClient::new(bus.clone()).await?;

    // Subscribing returns once the subscription is live, so no event below can be missed.
    let mut eu_events = client.subscribe_events("eu-west").await?;
    let mut us_events = client.subscribe_events("us-east").await?;
    let mut ap_events = client.subscribe_events("ap-south").await?;

    println!("topic calls per region:");
    lookup(&client, "eu-west", "lobby").await;
    lookup(&client, "us-east", "lobby").await;
    lookup(&client, "ap-south", "lobby").await;
    census(&client, "eu-west").await?;

    println!("region events:");
    eu1.publish_events("eu-west", &event("eu-west", "maintenance at 02:00"))
        .await?;
    us1.publish_events("us-east", &event("us-east", "room standup opened"))
        .await?;
    // Each subscriber's first event is its own region's: the other region's never reach it.
    for (name, sub) in [("eu-west", &mut eu_events), ("us-east", &mut us_events)] {
        if let Some(ev) = sub.recv().await {
            println!("  {name} subscriber got: [{}] {}", ev.region, ev.text);
        }
    }

    println!("us-1 registers ap-south at runtime:");
    us1.register_all_region_topics("ap-south").await?;
    us1.publish_events("ap-south", &event("ap-south", "now served by us-1"))
        .await?;
    if let Some(ev) = ap_events.recv().await {
        println!("  ap-south subscriber got: [{}] {}", ev.region, ev.text);
    }
    lookup(&client, "ap-south", "lobby").await;

    println!("eu-1 and eu-2 deregister eu-west:");
    for server in [eu1, eu2] {
        server.deregister_all_region_topics("eu-west");
    }
    eu1.publish_events("eu-west", &event("eu-west", "region closed"))
        .await?;
    if let Some(ev) = eu_events.recv().await {
        println!("  eu-west subscriber got: [{}] {}", ev.region, ev.text);
    }
    lookup(&client, "eu-west", "lobby").await;
    census(&client, "eu-west").await?;
    lookup(&client, "us-east", "lobby").await;

    for server in &servers {
        server.shutdown().await;
    }
    println!("done");
    Ok(())
}
