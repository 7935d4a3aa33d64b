//! psrpc: RPC over pub/sub message buses, wire-compatible with Go psrpc v0.7.
//!
//! Services call each other through a broker (NATS, Redis, or in-process) instead of by address.
//! A call can go to one server (optionally chosen by affinity), to every server (multi), or to
//! the servers of a topic (for example a region); servers can also publish to subscribers.
//!
//! Most users write a `.proto` file and let `psrpc-build` generate typed clients and servers;
//! the generic API below is what that code is built on.
//!
//! ```
//! use psrpc::{Client, MethodInfo, Server, bus::LocalBus};
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bus = LocalBus::new();
//! let server = Server::new("Greeter", bus.clone());
//! server
//!     .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(format!("hi {req}")) })
//!     .await
//!     .unwrap();
//! let client = Client::new("Greeter", bus).await.unwrap();
//! let reply: String = client.request(ECHO, &[], &"bob".to_string(), Default::default()).await.unwrap();
//! assert_eq!(reply, "hi bob");
//! # });
//! ```

pub mod batch;
pub mod bus;
pub mod channel;
pub mod client;
pub mod discovery;
pub mod durable;
mod error;
#[cfg(feature = "tonic")]
pub mod grpc;
mod id;
mod info;
pub mod interceptor;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod options;
pub mod server;
pub mod stream;
mod sync;
mod time;
pub mod trace;
pub mod wire;

/// The protobuf runtime, re-exported so that generated code (and its users) need no direct
/// `prost` dependency of their own; `psrpc-build` generates paths through it.
pub use prost;
/// The well-known protobuf types (`google.protobuf.*`), re-exported like [`prost`].
pub use prost_types;

pub use bus::{Bus, IntoBus};
pub use channel::Channel;
pub use client::{CallOptions, Client, ClientOptions, SelectionOptions};
pub use error::{Error, ErrorCode, Result};
pub use info::{Dispatch, MethodInfo, MethodKind};
pub use server::{RequestContext, Server, ServerOptions};

/// Caller metadata carried with each request (trace context lives here too).
pub type Metadata = std::collections::BTreeMap<String, String>;
