//! The redis bus for psrpc (work in progress).
