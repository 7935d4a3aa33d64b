//! The psrpc v0.7 wire format: the `internal` protobuf messages and the `Msg` envelope.
//!
//! Every payload on a bus is one [`Msg`] whose fields 1 and 2 make it byte-compatible with
//! `google.protobuf.Any`. The RPC machinery puts [`Request`], [`Response`], [`ClaimRequest`],
//! [`ClaimResponse`] and [`StreamFrame`] inside it; subscriptions put the user's message inside it.
//!
//! Fields numbered 1000 and up are this crate's additions: Go peers skip them as unknown fields,
//! Rust peers use them to do better than the v0.7 exchange (see [`Request::x_direct`]).
//!
//! ```
//! use psrpc::wire::{self, Request};
//!
//! let req = Request { request_id: "REQ_abcdefghijkl".into(), ..Default::default() };
//! let bytes = wire::encode_envelope(wire::REQUEST_TYPE_URL, &req);
//! let msg = wire::decode_envelope(bytes).unwrap();
//! assert_eq!(msg.type_url, wire::REQUEST_TYPE_URL);
//! ```

mod envelope;
mod messages;

/// IDs and timestamps in the wire's shapes, for code that builds wire messages by hand (tests,
/// tools, bus implementations): IDs are a prefix plus 12 random `[A-Za-z0-9]` characters,
/// times are Unix nanoseconds on this machine's wall clock (§9).
pub use crate::id::{new_client_id, new_id, new_request_id, new_server_id, new_stream_id};
#[doc(inline)]
pub use crate::time::{now_unix_nanos, unix_nanos_after};
pub use envelope::{
    ANY_TYPE_URL_PREFIX, CLAIM_REQUEST_TYPE_URL, CLAIM_RESPONSE_TYPE_URL, REQUEST_TYPE_URL,
    RESPONSE_TYPE_URL, STREAM_TYPE_URL, decode_envelope, encode_envelope, encode_envelope_raw,
    route_key, type_url_for, with_route_key,
};
pub use messages::{
    ClaimRequest, ClaimResponse, Msg, Request, Response, StreamAck, StreamClose, StreamFrame,
    StreamMessage, StreamOpen, stream_frame,
};
