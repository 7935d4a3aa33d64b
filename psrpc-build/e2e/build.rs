//! Generates the test protos: every option in one service, a set of files that import each
//! other and the well-known types, and a proto written for Go's generator.

fn main() -> Result<(), psrpc_build::Error> {
    psrpc_build::compile_protos(
        &["proto/everything/everything.proto"],
        &["proto/everything"],
    )?;
    psrpc_build::configure().compile_protos(
        &[
            "proto/compile/shapes.proto",
            "proto/compile/drawing.proto",
            "proto/compile/routing.proto",
        ],
        &["proto/compile"],
    )?;
    // Rust-only durable methods (`psrpc/durable.proto`).
    psrpc_build::compile_protos(&["proto/durable/jobs.proto"], &["proto/durable"])?;
    // Go users import "options.proto"; it must resolve without psrpc's folder on the path.
    psrpc_build::compile_protos(&["proto/goimport/legacy.proto"], &["proto/goimport"])
}
