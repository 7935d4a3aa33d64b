//! Generated-code tests for psrpc-build (work in progress).
