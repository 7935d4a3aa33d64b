//! The nats bus for psrpc (work in progress).
