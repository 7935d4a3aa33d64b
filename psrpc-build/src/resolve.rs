//! Finding `.proto` files: the user's include paths, the well-known types, then the embedded
//! psrpc options under both spellings Go users write.

use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

/// The psrpc options file, embedded so users do not need it on their include path.
pub(crate) const OPTIONS_PROTO: &str = include_str!("../../options-proto/psrpc/options.proto");

/// The Rust-only durable-method option (see `psrpc/durable.proto`).
pub(crate) const DURABLE_PROTO: &str = include_str!("../../options-proto/psrpc/durable.proto");

/// Serves `psrpc/options.proto`, and `options.proto` as Go's generator expects it, and
/// `psrpc/durable.proto`.
struct EmbeddedOptions;

impl FileResolver for EmbeddedOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match name {
            "psrpc/options.proto" | "options.proto" => File::from_source(name, OPTIONS_PROTO),
            "psrpc/durable.proto" => File::from_source(name, DURABLE_PROTO),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The resolver chain: the user's includes come first, so a file of theirs wins.
pub(crate) fn resolver(includes: &[std::path::PathBuf]) -> ChainFileResolver {
    let mut chain = ChainFileResolver::new();
    for include in includes {
        chain.add(IncludeFileResolver::new(include.clone()));
    }
    chain.add(GoogleFileResolver::new());
    chain.add(EmbeddedOptions);
    chain
}

/// True for the psrpc options files (either spelling, and the durable option): they are
/// read, never generated.
pub(crate) fn is_options_file(file: &prost_types::FileDescriptorProto) -> bool {
    file.package() == "psrpc"
        && file.extension.iter().any(|ext| {
            (ext.name() == "options" && ext.number() == 2198)
                || (ext.name() == "durable" && ext.number() == 2199)
        })
}
