//! Generates typed [psrpc](https://docs.rs/psrpc) clients and servers from `.proto` files, in a
//! build script, without a `protoc` binary.
//!
//! Write the `.proto` as for Go psrpc, with the method options of `psrpc/options.proto`
//! (import it as `"psrpc/options.proto"` or, as Go users do, `"options.proto"`; this crate
//! embeds the file, so it need not be on your include path):
//!
//! ```proto
//! syntax = "proto3";
//! package rooms;
//! import "psrpc/options.proto";
//!
//! service Rooms {
//!   // Looks a room up.
//!   rpc GetRoom(GetRoomRequest) returns (Room);
//!   rpc ListAll(ListRequest) returns (Room) { option (psrpc.options).type = MULTI; }
//!   rpc Join(JoinRequest) returns (Room) {
//!     option (psrpc.options).type = AFFINITY;
//!     option (psrpc.options).topics = true;
//!     option (psrpc.options).topic_params.names = "region";
//!   }
//!   rpc Updates(Empty) returns (Room) {
//!     option (psrpc.options).subscription = true;
//!     option (psrpc.options).type = MULTI;
//!   }
//!   rpc Chat(Message) returns (Message) { option (psrpc.options).stream = true; }
//! }
//! ```
//!
//! Call the generator from `build.rs` (with `psrpc-build` in `[build-dependencies]`):
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), psrpc_build::Error> {
//!     psrpc_build::compile_protos(&["proto/rooms.proto"], &["proto"])
//! }
//! ```
//!
//! and include the generated module (one file per proto package, named after the package):
//!
//! ```ignore
//! pub mod rooms {
//!     include!(concat!(env!("OUT_DIR"), "/rooms.rs"));
//! }
//! ```
//!
//! The generated code names prost and the well-known types through `psrpc::prost` and
//! `psrpc::prost_types`, so the crate using it depends on `psrpc` alone (plus `tokio` to run).
//!
//! Per service `Rooms` you get the prost messages plus:
//! - `rooms_methods`: the wire names and routing (`psrpc::MethodInfo` constants);
//! - `RoomsClient`: `get_room(&req, opts)`, `list_all(&req, opts)` (a stream of per-server
//!   results), `join(region, &req, opts)`, `subscribe_updates()` (a typed subscription),
//!   `chat(opts)` (a typed bidirectional `psrpc::stream::Stream`);
//! - `RoomsServerImpl`: a trait with one handler per rpc (`async fn get_room(&self, ctx, req)`;
//!   a stream handler gets the server's end of the stream) and `join_affinity` (default 1.0).
//!   A server implements every handler, as in Go; for servers that serve part of a service,
//!   see [`Builder::generate_default_stubs`];
//! - `RoomsServer`: `new(impl, bus)` serves the methods without topics at once;
//!   `register_join_topic(region)` / `deregister_join_topic(region)`, `publish_updates(&msg)`,
//!   `shutdown()`, `kill()`.
//!
//! Clients and servers stop working when their last handle is dropped, so they are
//! `#[must_use]`.
//!
//! Every generated message implements `prost::Name` (prost-build's `enable_type_names`, with
//! Go's `type.googleapis.com/` type URLs), which typed error details need. Generated
//! subscriptions name their messages by the proto name instead, so any message works there,
//! including the well-known types that lack `prost::Name` (`google.protobuf.Struct`, `Value`,
//! `ListValue`, `FieldMask`).
//!
//! The standard `option idempotency_level = IDEMPOTENT;` (or `NO_SIDE_EFFECTS`) on an rpc marks
//! its `MethodInfo` idempotent, so `psrpc::interceptor::Retry` may retry it after a timeout.
//!
//! With `topic_params.typed`, the client and server are generic over one `…TopicType`
//! parameter per topic name (any `AsRef<str>` type, `str` by default), as Go's typed topics
//! are; name the type (`let client: RoomsClient = …`) to take the defaults.
//!
//! Options are checked at build time: contradictory ones (topic parameters without `topics`,
//! MULTI streams, streaming subscriptions, names that collide after case conversion) fail the
//! build with an [`Error`] naming the file, service and method.

mod batch;
mod codegen;
mod durable;
mod error;
mod model;
mod names;
mod resolve;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use error::Error;

/// The text of `psrpc/options.proto`, as embedded and served to imports of
/// `"psrpc/options.proto"` and `"options.proto"`.
///
/// ```
/// assert!(psrpc_build::OPTIONS_PROTO.contains("extend google.protobuf.MethodOptions"));
/// ```
pub const OPTIONS_PROTO: &str = resolve::OPTIONS_PROTO;

/// A generator with default settings: client and server code, output to `OUT_DIR`.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), psrpc_build::Error> {
///     psrpc_build::configure()
///         .build_client(true)
///         .extern_path(".shared", "::shared_protos")
///         .compile_protos(&["proto/rooms.proto"], &["proto", "../shared/proto"])
/// }
/// ```
pub fn configure() -> Builder {
    Builder::default()
}

/// Compiles `protos` (found under `includes`) with default settings into `OUT_DIR`.
///
/// # Errors
/// See [`Builder::compile_protos`].
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), psrpc_build::Error> {
///     psrpc_build::compile_protos(&["proto/rooms.proto"], &["proto"])
/// }
/// ```
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile_protos(protos, includes)
}

/// Settings of the generator, in the style of `tonic-build`.
///
/// ```no_run
/// let out = std::env::temp_dir().join("psrpc-gen");
/// std::fs::create_dir_all(&out).unwrap();
/// psrpc_build::configure()
///     .out_dir(&out)
///     .build_server(false)
///     .emit_rerun_if_changed(false)
///     .compile_protos(&["proto/rooms.proto"], &["proto"])
///     .unwrap();
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder {
    out_dir: Option<PathBuf>,
    extern_paths: Vec<(String, String)>,
    build_client: bool,
    build_server: bool,
    default_stubs: bool,
    emit_rerun_if_changed: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            out_dir: None,
            extern_paths: Vec::new(),
            build_client: true,
            build_server: true,
            default_stubs: false,
            emit_rerun_if_changed: true,
        }
    }
}

impl Builder {
    /// Writes the generated files to `dir` instead of `OUT_DIR`.
    ///
    /// ```
    /// let builder = psrpc_build::configure().out_dir("src/generated");
    /// # let _ = builder;
    /// ```
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Uses existing Rust types for a proto package or message instead of generating them,
    /// as `prost_build::Config::extern_path` (for example `(".shared", "::shared_protos")`).
    /// Such types need their own `prost::Name` impl to be used as error details.
    ///
    /// ```
    /// let builder = psrpc_build::configure().extern_path(".shared", "::shared_protos");
    /// # let _ = builder;
    /// ```
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Self {
        self.extern_paths
            .push((proto_path.into(), rust_path.into()));
        self
    }

    /// Generates the typed clients (default: true).
    ///
    /// ```
    /// let server_only = psrpc_build::configure().build_client(false);
    /// # let _ = server_only;
    /// ```
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Generates the server traits and typed servers (default: true).
    ///
    /// ```
    /// let client_only = psrpc_build::configure().build_server(false);
    /// # let _ = client_only;
    /// ```
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Generates default handlers, for servers that implement part of a service (default:
    /// false), as `tonic-build`'s option of the same name.
    ///
    /// By default the `…ServerImpl` trait has no default handlers: a server implements the
    /// whole service, as in Go. With stubs, every handler defaults to an `unimplemented`
    /// error, and the trait gains a required constant `SERVED`, the methods this
    /// implementation serves (the `…_methods` constants). The generated server registers
    /// only those, so a partial server never attracts calls it cannot serve; `new` refuses a
    /// `SERVED` entry that is not a handler of the service (`invalid_argument`), and
    /// registering a topic of a method not served fails with `unimplemented`. A method
    /// implemented but not listed is not served.
    ///
    /// ```
    /// let partial = psrpc_build::configure().generate_default_stubs(true);
    /// # let _ = partial;
    /// ```
    ///
    /// and then, in the crate using the generated code:
    ///
    /// ```ignore
    /// impl RoomsServerImpl for Lookup {
    ///     const SERVED: &'static [psrpc::MethodInfo] = &[rooms_methods::GET_ROOM];
    ///
    ///     async fn get_room(&self, ctx: RequestContext, req: GetRoomRequest) -> psrpc::Result<Room> {
    ///         // …
    /// #       todo!()
    ///     }
    /// }
    /// ```
    pub fn generate_default_stubs(mut self, enable: bool) -> Self {
        self.default_stubs = enable;
        self
    }

    /// Prints `cargo:rerun-if-changed` for every `.proto` file read from disk (default: true),
    /// so Cargo reruns the build script when one changes.
    ///
    /// ```
    /// let quiet = psrpc_build::configure().emit_rerun_if_changed(false);
    /// # let _ = quiet;
    /// ```
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Compiles `protos`, found under `includes`, and writes one `<package>.rs` per proto
    /// package (`_.rs` for files without a package): prost messages plus psrpc code.
    ///
    /// # Errors
    /// [`Error::Compile`] for a `.proto` that does not compile, [`Error::InvalidMethod`] and
    /// [`Error::InvalidService`] for psrpc options that cannot work, [`Error::NoOutDir`] and
    /// [`Error::Write`] for output problems.
    ///
    /// ```no_run
    /// psrpc_build::configure().compile_protos(&["proto/rooms.proto"], &["proto"]).unwrap();
    /// ```
    pub fn compile_protos(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        self.compile_with_config(prost_build::Config::new(), protos, includes)
    }

    /// Like [`compile_protos`](Self::compile_protos), with a prost-build configuration of your
    /// own (attributes, `bytes`, `btree_map`, …). Its service generator is replaced, its prost
    /// paths point at psrpc's re-exports, and its output directory and include file are not
    /// used: set them on this builder.
    ///
    /// # Errors
    /// See [`compile_protos`](Self::compile_protos).
    ///
    /// ```no_run
    /// let mut config = prost_build::Config::new();
    /// config.type_attribute(".", "#[derive(Eq)]");
    /// psrpc_build::configure()
    ///     .compile_with_config(config, &["proto/rooms.proto"], &["proto"])
    ///     .unwrap();
    /// ```
    pub fn compile_with_config(
        self,
        mut config: prost_build::Config,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_owned()).collect();
        let mut compiler = protox::Compiler::with_file_resolver(resolve::resolver(&includes));
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(protos)?;
        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        let pool = compiler.descriptor_pool();
        let services = Rc::new(model::read_services(&pool)?);
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };

        // Generated code reaches prost through psrpc's re-exports, so users need no direct
        // prost or prost-types dependency.
        config.prost_path("::psrpc::prost");
        config.prost_types_path("::psrpc::prost_types");
        // Subscriptions and error details need each message's name; Go's type URLs carry the
        // `type.googleapis.com` host, so packed details read the same on both sides.
        config.enable_type_names();
        config.type_name_domain(["."], "type.googleapis.com");
        for (proto, rust) in &self.extern_paths {
            config.extern_path(proto, rust);
        }
        let errors = Rc::new(RefCell::new(Vec::new()));
        config.service_generator(Box::new(codegen::PsrpcGenerator {
            services,
            parts: codegen::Parts {
                client: self.build_client,
                server: self.build_server,
                default_stubs: self.default_stubs,
            },
            errors: errors.clone(),
        }));
        // The options file is read through the pool, never generated.
        let requests: Vec<(prost_build::Module, prost_types::FileDescriptorProto)> = compiler
            .file_descriptor_set()
            .file
            .into_iter()
            .filter(|f| !resolve::is_options_file(f))
            .map(|f| {
                (
                    prost_build::Module::from_protobuf_package_name(f.package()),
                    f,
                )
            })
            .collect();
        let modules = config
            .generate(requests)
            .map_err(|e| Error::Generate(e.to_string()))?;
        if let Some(err) = errors.borrow_mut().drain(..).next() {
            return Err(err);
        }
        for (module, content) in modules {
            let path = out_dir.join(module.to_file_name_or("_"));
            write_if_changed(&path, &content)?;
        }
        Ok(())
    }
}

/// Writes only when the content changed, so Cargo does not rebuild dependents needlessly.
fn write_if_changed(path: &Path, content: &str) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, content).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}
