//! Middleware around calls: a greeter checks who calls (an interceptor), asks a profile service
//! one hop further (the trace continues there), and every call is observed; the profile service
//! survives a panicking handler and rate-limits; the caller retries what is worth retrying.
//!
//! Run: `cargo run -p psrpc-examples --bin middleware [-- --bus nats://127.0.0.1:4222]`; with
//! `--role server` in one terminal and `--role client` in another, the two services and the
//! caller run as two processes, each printing the calls it observed (`--help` for the options).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use psrpc::interceptor::{
    BoxResponse, CallEvent, Observe, RateLimit, RecoverPanics, Retry, ServerCall,
    ServerInterceptor, ServerNext,
};
use psrpc::{CallOptions, ClientOptions, Error, ErrorCode, RequestContext, ServerOptions};
use psrpc_examples::Role;
use psrpc_examples::gateway::{
    GreetRequest, GreeterClient, GreeterServer, GreeterServerImpl, Greeting, Profile,
    ProfileRequest, ProfilesClient, ProfilesServer, ProfilesServerImpl,
};

/// Refuses calls without a `user` in their metadata, and passes the user on.
struct RequireUser;

impl ServerInterceptor for RequireUser {
    fn intercept(&self, call: ServerCall, next: ServerNext) -> BoxResponse {
        if !call.ctx.metadata().contains_key("user") {
            return Box::pin(async {
                Err(Error::new(ErrorCode::Unauthenticated, "say who you are"))
            });
        }
        next.run(call)
    }
}

struct Profiles {
    lookups: AtomicUsize,
}

impl ProfilesServerImpl for Profiles {
    async fn get(&self, ctx: RequestContext, req: ProfileRequest) -> psrpc::Result<Profile> {
        if req.name == "crash" {
            panic!("a bug in the profile service");
        }
        // The first lookup fails as if a dependency hiccuped; the caller's retry gets through.
        if self.lookups.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "profile store warming up",
            ));
        }
        Ok(Profile {
            display_name: format!("dear {}", req.name),
            trace_id: ctx.trace().map(|t| t.trace_id()).unwrap_or_default(),
        })
    }
}

struct Front {
    profiles: ProfilesClient,
}

impl GreeterServerImpl for Front {
    async fn greet(&self, ctx: RequestContext, req: GreetRequest) -> psrpc::Result<Greeting> {
        // Called while serving: this request carries the greeter's trace one hop further.
        let profile = self
            .profiles
            .get(&ProfileRequest { name: req.name }, CallOptions::new())
            .await?;
        Ok(Greeting {
            text: format!("hello, {}", profile.display_name),
            trace_id: ctx.trace().map(|t| t.trace_id()).unwrap_or_default(),
            profile_trace_id: profile.trace_id,
        })
    }
}

const ABOUT: &str = "Interceptors: an authentication check, panic recovery, a rate limit, \
client retries, an observer of every call, and one trace continuing across two services.";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = psrpc_examples::args_or_exit("middleware", ABOUT);
    let bus = psrpc_examples::connect_or_exit(&args).await;
    println!("bus: {}", bus.name());
    // RecoverPanics answers `internal`; keep the default hook's backtrace out of the output.
    std::panic::set_hook(Box::new(|info| eprintln!("(a handler panicked: {info})")));

    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    // A server process runs until stopped: it prints each call as it sees it.
    let live = args.role == Role::Server;
    let observe = Observe::new(move |e: &CallEvent<'_>| {
        let outcome = e.error.map_or("ok".to_string(), |c| c.to_string());
        let line = format!(
            "{:<6} {}.{} {} ({} B in, {} B out)",
            e.role.as_str(),
            e.service,
            e.method,
            outcome,
            e.request_bytes,
            e.response_bytes
        );
        if live {
            println!("observed: {line}");
        } else {
            sink.lock().unwrap().push(line);
        }
    });

    let mut servers = None;
    if args.role.serves() {
        let profiles = ProfilesServer::with_options(
            Profiles {
                lookups: AtomicUsize::new(0),
            },
            bus.clone(),
            ServerOptions::default()
                .interceptor(observe.clone())
                .interceptor(RecoverPanics)
                .interceptor(RateLimit::new(2.0, 4)),
        )
        .await?;
        let to_profiles = ProfilesClient::with_options(
            bus.clone(),
            ClientOptions::default().interceptor(Retry::new(3)),
        )
        .await?;
        let greeter = GreeterServer::with_options(
            Front {
                profiles: to_profiles.clone(),
            },
            bus.clone(),
            ServerOptions::default()
                .interceptor(observe.clone())
                .interceptor(RequireUser),
        )
        .await?;
        servers = Some((greeter, profiles));
    }
    if args.role == Role::Server {
        psrpc_examples::serve_until_stopped("Greeter and Profiles").await;
    } else {
        call(&bus, observe, &events).await?;
    }
    if let Some((greeter, profiles)) = servers {
        greeter.shutdown().await;
        profiles.shutdown().await;
    }
    Ok(())
}

/// The caller's part: greetings, a panic, a burst against the rate limit.
async fn call(
    bus: &Arc<dyn psrpc::bus::Bus>,
    observe: Observe,
    events: &std::sync::Mutex<Vec<String>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let caller = GreeterClient::with_options(
        bus.clone(),
        ClientOptions::default()
            // Start a trace for each call made outside any traced request.
            .start_traces(true)
            .interceptor(observe),
    )
    .await?;

    let greeting = caller
        .greet(
            &GreetRequest { name: "ada".into() },
            CallOptions::new().metadata("user", "ada"),
        )
        .await?;
    println!("greeting:      {} (after a retried lookup)", greeting.text);
    let same = greeting.trace_id == greeting.profile_trace_id && !greeting.trace_id.is_empty();
    println!(
        "trace:         greeter {} / profiles {} -> {}",
        greeting.trace_id,
        greeting.profile_trace_id,
        if same {
            "one trace across two hops"
        } else {
            "BROKEN"
        }
    );

    let anonymous = caller
        .greet(&GreetRequest { name: "eve".into() }, CallOptions::new())
        .await;
    println!("no user:       {}", anonymous.unwrap_err());

    // Without retries, to see each outcome as it is.
    let plain = ProfilesClient::new(bus.clone()).await?;
    let crashed = plain
        .get(
            &ProfileRequest {
                name: "crash".into(),
            },
            CallOptions::new(),
        )
        .await;
    println!(
        "panic:         {} (the server keeps serving)",
        crashed.unwrap_err()
    );

    let mut limited = 0;
    for _ in 0..6 {
        let outcome = plain
            .get(&ProfileRequest { name: "bob".into() }, CallOptions::new())
            .await;
        if outcome.is_err_and(|err| err.code() == ErrorCode::ResourceExhausted) {
            limited += 1;
        }
    }
    println!("rate limit:    {limited} of 6 quick lookups shed with resource_exhausted");

    println!("observed calls:");
    for line in events.lock().unwrap().iter() {
        println!("  {line}");
    }
    Ok(())
}
