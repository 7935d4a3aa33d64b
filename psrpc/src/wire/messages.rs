//! The `internal` messages of psrpc v0.7 (docs/wire.md §1–§2), with their field numbers.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The envelope of every payload on the bus (`internal.Msg`).
///
/// Fields 1 and 2 are those of `google.protobuf.Any`; `channel` (field 3) is the NATS route key
/// and is empty on Redis and in-process buses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// `type.googleapis.com/` + the full protobuf name of the message in `value`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded inner message.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// Route key (`Method.REQ`, `Method.RCLAIM`, `Method.STR`), NATS only.
    #[prost(string, tag = "3")]
    pub channel: String,
}

/// A call from a client to servers (`internal.Request`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// `REQ_` + 12 alphanumeric characters.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The caller's ID, which names its reply channels.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// Unix nanoseconds, sender's clock.
    #[prost(int64, tag = "3")]
    pub sent_at: i64,
    /// Unix nanoseconds at and after which the request is dead.
    #[prost(int64, tag = "4")]
    pub expiry: i64,
    /// True for multi RPCs (informational).
    #[prost(bool, tag = "5")]
    pub multi: bool,
    /// Caller metadata (trace context travels here as `traceparent` / `tracestate`).
    #[prost(btree_map = "string, string", tag = "7")]
    pub metadata: BTreeMap<String, String>,
    /// The encoded user request.
    #[prost(bytes = "bytes", tag = "8")]
    pub raw_request: Bytes,
    /// Rust extension: the caller accepts a `Response` without the claim exchange.
    ///
    /// Only set on queue-routed calls, where exactly one server receives the request; a Rust
    /// server then answers at once (two messages instead of four). Go servers ignore the field
    /// and claim as usual, which the caller still handles.
    #[prost(bool, tag = "1001")]
    pub x_direct: bool,
}

/// A server's answer (`internal.Response`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Echoes [`Request::request_id`].
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// `SRV_` + 12 alphanumeric characters.
    #[prost(string, tag = "2")]
    pub server_id: String,
    /// Unix nanoseconds, sender's clock.
    #[prost(int64, tag = "3")]
    pub sent_at: i64,
    /// Error message; non-empty means the call failed.
    #[prost(string, tag = "5")]
    pub error: String,
    /// Error code string (see [`crate::ErrorCode`]).
    #[prost(string, tag = "6")]
    pub code: String,
    /// The encoded user response.
    #[prost(bytes = "bytes", tag = "7")]
    pub raw_response: Bytes,
    /// Error details, like `google.rpc.Status` details.
    #[prost(message, repeated, tag = "8")]
    pub error_details: Vec<prost_types::Any>,
}

/// A server's offer to handle a request (`internal.ClaimRequest`), sent to the caller.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimRequest {
    /// The request being claimed.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The claiming server.
    #[prost(string, tag = "2")]
    pub server_id: String,
    /// How well this server fits the request; higher is better.
    #[prost(float, tag = "3")]
    pub affinity: f32,
}

/// The caller's choice among claims (`internal.ClaimResponse`), broadcast to the servers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimResponse {
    /// The request that was claimed.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The chosen server; every other server drops the request.
    #[prost(string, tag = "2")]
    pub server_id: String,
    /// Rust extension: the caller gave up on the request (dropped or cancelled).
    ///
    /// Sent with an empty `server_id`, so a Go server still waiting for its claim answer drops
    /// the request, and a Rust server running the handler signals its cancellation token.
    #[prost(bool, tag = "1001")]
    pub x_cancel: bool,
}

/// A frame of a bidirectional stream (`internal.Stream` on the wire; named for what it is here,
/// so that [`crate::stream::Stream`] is the one `Stream` of this crate).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamFrame {
    /// `STR_` + 12 alphanumeric characters.
    #[prost(string, tag = "1")]
    pub stream_id: String,
    /// A fresh ID per frame (the open's ID for the open and its ack).
    #[prost(string, tag = "2")]
    pub request_id: String,
    /// Unix nanoseconds, sender's clock.
    #[prost(int64, tag = "3")]
    pub sent_at: i64,
    /// Unix nanoseconds at and after which the frame is dead.
    #[prost(int64, tag = "4")]
    pub expiry: i64,
    /// What the frame carries.
    #[prost(oneof = "stream_frame::Body", tags = "6, 7, 8, 9, 1001")]
    pub body: Option<stream_frame::Body>,
}

/// The body variants of [`StreamFrame`].
pub mod stream_frame {
    /// What a [`super::StreamFrame`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        /// Opens the stream.
        #[prost(message, tag = "6")]
        Open(super::StreamOpen),
        /// A user message.
        #[prost(message, tag = "7")]
        Message(super::StreamMessage),
        /// Acknowledges an open or a message.
        #[prost(message, tag = "8")]
        Ack(super::StreamAck),
        /// Ends the stream, optionally with an error.
        #[prost(message, tag = "9")]
        Close(super::StreamClose),
        /// Rust extension: a keepalive between Rust peers, so a vanished peer is detected.
        ///
        /// Only sent to peers that announced a window ([`super::StreamOpen::x_window`] or
        /// [`super::StreamAck::x_window`]), never to Go peers.
        #[prost(message, tag = "1001")]
        XPing(super::StreamAck),
    }
}

/// Opens a stream (`internal.StreamOpen`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamOpen {
    /// The opening client's ID.
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// Caller metadata.
    #[prost(btree_map = "string, string", tag = "7")]
    pub metadata: BTreeMap<String, String>,
    /// Rust extension: how many unacknowledged messages the opener accepts (0: a Go peer, which
    /// gets stop-and-wait).
    #[prost(uint32, tag = "1001")]
    pub x_window: u32,
}

/// A user message on a stream (`internal.StreamMessage`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamMessage {
    /// The encoded user message.
    #[prost(bytes = "bytes", tag = "2")]
    pub raw_message: Bytes,
}

/// Acknowledges a stream frame (`internal.StreamAck`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAck {
    /// Rust extension, on the ack of an open: the server's window (0 for Go servers).
    #[prost(uint32, tag = "1001")]
    pub x_window: u32,
    /// Rust extension, between Rust peers only: the request IDs of further messages this
    /// frame acknowledges besides the one in `StreamFrame.request_id` (acks batched under load).
    #[prost(string, repeated, tag = "1002")]
    pub x_more: Vec<String>,
}

/// Closes a stream (`internal.StreamClose`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamClose {
    /// Error message; empty for a clean close.
    #[prost(string, tag = "1")]
    pub error: String,
    /// Error code string.
    #[prost(string, tag = "2")]
    pub code: String,
}
