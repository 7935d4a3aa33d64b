//! Job placement by affinity: every server claims a job with its headroom for it (1 − load −
//! the job's share; a server the job would overload declines), and the caller picks among the
//! claims. By default the highest affinity, so the least loaded server, wins; the selection
//! options change that: a minimum affinity, or a selection function of your own.
//!
//! Run: `cargo run -p psrpc-examples --bin affinity [-- --bus nats://127.0.0.1:4222]`; with
//! `--role server` in one terminal and `--role client` in another, the servers and the caller
//! run as two processes (`--help` for the options).

use std::sync::Mutex;
use std::time::Duration;

use psrpc::client::Claim;
use psrpc::{CallOptions, Error, ErrorCode, RequestContext, SelectionOptions};
use psrpc_examples::Role;
use psrpc_examples::placement::{
    Job, Placed, PlacementClient, PlacementServer, PlacementServerImpl, placement_methods,
};

/// A server with a load that grows with each job it takes.
struct Node {
    load: Mutex<f32>,
}

impl Node {
    fn load(&self) -> f32 {
        *self.load.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PlacementServerImpl for Node {
    async fn place(&self, ctx: RequestContext, job: Job) -> psrpc::Result<Placed> {
        let mut load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        // Another job may have landed since the claim: check again rather than overload.
        if *load + job.cpu > 1.0 {
            return Err(Error::new(ErrorCode::ResourceExhausted, "no room left"));
        }
        *load += job.cpu;
        Ok(Placed {
            name: job.name,
            node_id: ctx.server_id().to_owned(),
            load: *load,
        })
    }

    fn place_affinity(&self, job: &Job) -> f32 {
        // Negative when the job does not fit: the server does not claim it.
        1.0 - self.load() - job.cpu
    }
}

fn job(name: &str, cpu: f32) -> Job {
    Job {
        name: name.into(),
        cpu,
    }
}

/// The default selection for an affinity method, with a shorter wait for claims so that a
/// job nobody takes fails fast.
fn selection() -> SelectionOptions {
    SelectionOptions::for_method(placement_methods::PLACE)
        .affinity_timeout(Duration::from_millis(500))
}

async fn place(client: &PlacementClient, job: &Job, selection: SelectionOptions) {
    // Servers that claimed but were not chosen wait for an answer until the call's deadline:
    // a short one lets them move on (and shut down) soon.
    let opts = CallOptions::new()
        .timeout(Duration::from_millis(800))
        .selection(selection);
    match client.place(job, opts).await {
        Ok(p) => println!(
            "  {} (cpu {:.2}) -> {} (load now {:.2})",
            p.name, job.cpu, p.node_id, p.load
        ),
        Err(err) => println!("  {} (cpu {:.2}) -> error: {err}", job.name, job.cpu),
    }
}

fn print_claims(claims: &[Claim]) {
    let mut claims = claims.to_vec();
    claims.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    let list: Vec<String> = claims
        .iter()
        .map(|c| format!("{} {:.2}", c.server_id, c.affinity))
        .collect();
    println!("  claims: {}", list.join(", "));
}

const ABOUT: &str = "Job placement by affinity: servers claim a job with their headroom, the \
least loaded wins by default; a minimum affinity and a selection function change the choice.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("affinity", ABOUT);
    let bus = psrpc_examples::connect_or_exit(&args).await;
    println!("bus: {}", bus.name());

    let mut servers = Vec::new();
    let fleet = if args.role.serves() {
        &[
            ("node-a", 0.70_f32),
            ("node-b", 0.20),
            ("node-c", 0.50),
            ("node-d", 0.95),
        ][..]
    } else {
        &[]
    };
    for &(id, load) in fleet {
        let node = Node {
            load: Mutex::new(load),
        };
        servers.push(
            PlacementServer::with_options(node, bus.clone(), psrpc_examples::named(id)).await?,
        );
        println!("{id} load {load:.2}");
    }
    match args.role {
        Role::Server => {
            psrpc_examples::serve_until_stopped("node-a to node-d").await;
            for server in &servers {
                server.shutdown().await;
            }
            return Ok(());
        }
        Role::Client | Role::Both => {}
    }
    let client: PlacementClient = PlacementClient::new(bus.clone()).await?;

    println!("default selection: the highest affinity (most headroom) wins");
    // A selection function sees the claims; this one only prints them, then takes the best.
    let show_and_pick_best = selection().selection_fn(|claims| {
        print_claims(claims);
        claims
            .iter()
            .max_by(|a, b| a.affinity.total_cmp(&b.affinity))
            .map(|c| c.server_id.clone())
            .ok_or_else(Error::no_servers_available)
    });
    place(&client, &job("transcode", 0.10), show_and_pick_best).await;

    println!("minimum affinity 0.8: claims below it are ignored");
    place(
        &client,
        &job("big-render", 0.10),
        selection().minimum_affinity(0.8),
    )
    .await;

    println!("selection function: bin packing, the fullest server that fits");
    let fullest = selection().selection_fn(|claims| {
        print_claims(claims);
        claims
            .iter()
            .min_by(|a, b| a.affinity.total_cmp(&b.affinity))
            .map(|c| c.server_id.clone())
            .ok_or_else(Error::no_servers_available)
    });
    place(&client, &job("thumbnail", 0.10), fullest).await;

    println!("a batch: each job raises its server's load, so the next may go elsewhere");
    for n in 1..=3 {
        place(&client, &job(&format!("batch-{n}"), 0.15), selection()).await;
    }
    println!("a job no server has room for:");
    place(&client, &job("huge", 0.90), selection()).await;

    for server in &servers {
        println!(
            "{} final load {:.2}",
            server.server().id(),
            server.implementation().load()
        );
        server.shutdown().await;
    }
    println!("done");
    Ok(())
}
