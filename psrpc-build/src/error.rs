//! The generator's errors.

/// Why code generation failed.
///
/// Messages name the `.proto` file, the service and the method, so a failing build script
/// points at the declaration to fix.
///
/// ```
/// let err = psrpc_build::Error::InvalidMethod {
///     file: "rooms.proto".into(),
///     service: "Rooms".into(),
///     method: "Watch".into(),
///     reason: "a subscription cannot use AFFINITY routing; use QUEUE or MULTI".into(),
/// };
/// assert!(err.to_string().starts_with("rooms.proto: service Rooms, method Watch:"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file did not parse, an import was not found, or a type did not resolve.
    // protox puts `file:line:column` in its Debug form only.
    #[error("failed to compile the .proto files: {0:?}")]
    Compile(#[from] Box<protox::Error>),
    /// A method's psrpc options are contradictory or unsupported.
    #[error("{file}: service {service}, method {method}: {reason}")]
    InvalidMethod {
        /// The `.proto` file (as named on the include path).
        file: String,
        /// The service, as written.
        service: String,
        /// The rpc, as written.
        method: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A service would generate names that collide.
    #[error("{file}: service {service}: {reason}")]
    InvalidService {
        /// The `.proto` file (as named on the include path).
        file: String,
        /// The service, as written.
        service: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// prost-build failed, or generated code did not parse (a bug in this crate).
    #[error("failed to generate code: {0}")]
    Generate(String),
    /// No output directory: `OUT_DIR` is unset outside a build script, and none was given.
    #[error("no output directory: OUT_DIR is not set; call `out_dir` outside build scripts")]
    NoOutDir,
    /// Writing the generated files failed.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file being written.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<protox::Error> for Error {
    fn from(err: protox::Error) -> Self {
        Error::Compile(Box::new(err))
    }
}
