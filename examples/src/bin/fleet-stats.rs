//! One multi call collects the numbers of a whole fleet of media servers: each server answers
//! for itself, one of them fails, and the caller adds the answers up into a fleet total. Then a
//! server shuts down and the next call hears from the rest.
//!
//! Run: `cargo run -p psrpc-examples --bin fleet-stats [-- --bus redis://127.0.0.1:6379]`; with
//! `--role server` in one terminal and `--role client` in another, the fleet and the caller run
//! as two processes (the caller then polls once; `--help` for the options).

use std::time::Duration;

use psrpc::client::MultiResult;
use psrpc::{CallOptions, Error, ErrorCode, RequestContext};
use psrpc_examples::Role;
use psrpc_examples::fleet::{FleetClient, FleetServer, FleetServerImpl, NodeStats, StatsRequest};

/// A media server's current numbers, or the reason it cannot report them.
struct Node {
    stats: Result<NodeStats, &'static str>,
}

impl FleetServerImpl for Node {
    async fn get_stats(&self, ctx: RequestContext, _req: StatsRequest) -> psrpc::Result<NodeStats> {
        let mut stats = self
            .stats
            .clone()
            .map_err(|why| Error::new(ErrorCode::Unavailable, why))?;
        stats.node_id = ctx.server_id().to_owned();
        Ok(stats)
    }
}

/// The fleet total of the answers that came back.
#[derive(Default)]
struct Total {
    nodes: usize,
    failed: usize,
    cpu_percent: f32,
    load_avg: f32,
    rooms: u32,
    participants: u32,
}

impl Total {
    fn of(answers: &[MultiResult<NodeStats>]) -> Total {
        let mut total = Total::default();
        for answer in answers {
            match &answer.result {
                Ok(stats) => {
                    total.nodes += 1;
                    total.cpu_percent += stats.cpu_percent;
                    total.load_avg += stats.load_avg;
                    total.rooms += stats.rooms;
                    total.participants += stats.participants;
                }
                Err(_) => total.failed += 1,
            }
        }
        total
    }

    fn print(&self) {
        // Averages only over the servers that answered: a failed one has no numbers.
        let n = self.nodes.max(1) as f32;
        println!(
            "  fleet total: {} servers ({} failed), {} rooms, {} participants, \
             avg cpu {:.1}%, avg load {:.2}",
            self.nodes,
            self.failed,
            self.rooms,
            self.participants,
            self.cpu_percent / n,
            self.load_avg / n,
        );
    }
}

/// Asks every server for its numbers and prints them, sorted by server.
async fn poll(client: &FleetClient) -> psrpc::Result<()> {
    // A multi call listens until its timeout, since it cannot know how many servers exist.
    let opts = CallOptions::new().timeout(Duration::from_millis(400));
    let mut answers = client
        .get_stats(&StatsRequest { detailed: false }, opts)
        .await?
        .collect_all()
        .await;
    answers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    for answer in &answers {
        match &answer.result {
            Ok(s) => println!(
                "  {}: cpu {:>4.1}%  load {:.2}  rooms {:>2}  participants {:>3}",
                s.node_id, s.cpu_percent, s.load_avg, s.rooms, s.participants
            ),
            Err(err) => println!("  {}: error: {err}", answer.server_id),
        }
    }
    Total::of(&answers).print();
    Ok(())
}

fn stats(cpu_percent: f32, load_avg: f32, rooms: u32, participants: u32) -> NodeStats {
    NodeStats {
        node_id: String::new(),
        cpu_percent,
        load_avg,
        rooms,
        participants,
    }
}

const ABOUT: &str = "One multi call collects the numbers of a fleet of media servers into a \
fleet total; one server fails, and in the one-process run one shuts down between two polls.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("fleet-stats", ABOUT);
    let bus = psrpc_examples::connect_or_exit(&args).await;
    println!("bus: {}", bus.name());

    let fleet = [
        ("media-1", Ok(stats(42.5, 1.20, 12, 140))),
        ("media-2", Ok(stats(17.0, 0.45, 4, 31))),
        ("media-3", Err("metrics agent not running")),
        ("media-4", Ok(stats(63.5, 2.10, 20, 212))),
    ];
    let mut servers = Vec::new();
    if args.role.serves() {
        for (id, stats) in fleet {
            let node = Node { stats };
            servers.push(
                FleetServer::with_options(node, bus.clone(), psrpc_examples::named(id)).await?,
            );
        }
    }
    match args.role {
        Role::Server => psrpc_examples::serve_until_stopped("media-1 to media-4").await,
        Role::Client => {
            let client: FleetClient = FleetClient::new(bus.clone()).await?;
            println!("GetStats to every server:");
            poll(&client).await?;
        }
        Role::Both => {
            let client: FleetClient = FleetClient::new(bus.clone()).await?;
            println!("GetStats to every server:");
            poll(&client).await?;

            // Shutdown stops taking requests before it returns: the next call no longer
            // reaches media-4.
            let gone = servers.pop().expect("four servers");
            gone.shutdown().await;
            println!("media-4 shut down; GetStats again:");
            poll(&client).await?;
        }
    }

    for server in &servers {
        server.shutdown().await;
    }
    println!("done");
    Ok(())
}
