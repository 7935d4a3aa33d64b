//! psrpc code generator (work in progress).
