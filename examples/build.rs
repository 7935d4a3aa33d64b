//! Generates the typed clients and servers of the examples from `proto/`.

fn main() -> Result<(), psrpc_build::Error> {
    psrpc_build::compile_protos(
        &[
            "proto/demo.proto",
            "proto/fleet.proto",
            "proto/regions.proto",
            "proto/placement.proto",
            "proto/gateway.proto",
            "proto/jobs.proto",
            "proto/wordcount.proto",
        ],
        &["proto"],
    )
}
