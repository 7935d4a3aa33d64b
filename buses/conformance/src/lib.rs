//! Conformance suite for psrpc buses (work in progress).
