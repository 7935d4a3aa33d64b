//! Generates the test protos: every option in one service, a set of files that import each
//! other and the well-known types, and a proto written for Go's generator.

fn main() -> Result<(), psrpc_build::Error> {
    psrpc_build::compile_protos(
        &["proto/everything/everything.proto"],
        &["proto/everything"],
    )?;
    // With default stubs: the servers of these tests implement part of their services.
    psrpc_build::configure()
        .generate_default_stubs(true)
        .compile_protos(
            &[
                "proto/compile/shapes.proto",
                "proto/compile/drawing.proto",
                "proto/compile/routing.proto",
            ],
            &["proto/compile"],
        )?;
    // Partial servers: default stubs, each server lists what it serves.
    psrpc_build::configure()
        .generate_default_stubs(true)
        .compile_protos(&["proto/partial/partial.proto"], &["proto/partial"])?;
    // Rust-only durable methods (`psrpc/durable.proto`).
    psrpc_build::compile_protos(&["proto/durable/jobs.proto"], &["proto/durable"])?;
    // The well-known types (`google.protobuf.Struct`, `Value`, …) in methods and subscriptions.
    psrpc_build::compile_protos(&["proto/wellknown/wellknown.proto"], &["proto/wellknown"])?;
    // Go users import "options.proto"; it must resolve without psrpc's folder on the path.
    psrpc_build::compile_protos(&["proto/goimport/legacy.proto"], &["proto/goimport"])
}
