//! Decoding of inner and user messages by type URL, and rendering of decoded structs into the
//! same text model protoc printed, so the two can be compared field by field.

use prost::Message;
use psrpc::wire::{
    self, ClaimRequest, ClaimResponse, Msg, Request, Response, StreamFrame, stream_frame::Body,
};

use super::text::{Fields, Value};

/// `interop.EchoRequest`; field numbers read off the capture bytes (`0a` = field 1, bytes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// `interop.EchoResponse`: `0a`,`12`,`1a` strings 1–3, `25` fixed32 float 4, `2a` string 5.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Field 2.
    #[prost(string, tag = "2")]
    pub server_id: String,
    /// Field 3.
    #[prost(string, tag = "3")]
    pub remote_id: String,
    /// Field 4.
    #[prost(float, tag = "4")]
    pub affinity: f32,
    /// Field 5; the plural name suggests `repeated`, which encodes the same for one element.
    #[prost(string, repeated, tag = "5")]
    pub regions: Vec<String>,
}

/// `interop.ChatMsg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatMsg {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// `interop.Event`: `0a` string 1, `10` varint 2 (signedness unknown; the captures are positive).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub seq: i64,
}

/// Builds text-format fields the way protoc prints them: number order, defaults omitted.
#[derive(Default)]
struct Out(Fields);

impl Out {
    fn bytes(mut self, name: &str, v: &[u8]) -> Self {
        if !v.is_empty() {
            self.0.push((name.into(), Value::Str(v.to_vec())));
        }
        self
    }
    fn str(self, name: &str, v: &str) -> Self {
        self.bytes(name, v.as_bytes())
    }
    fn word(mut self, name: &str, v: String, default: bool) -> Self {
        if !default {
            self.0.push((name.into(), Value::Word(v)));
        }
        self
    }
    fn int(self, name: &str, v: i64) -> Self {
        self.word(name, v.to_string(), v == 0)
    }
    fn boolean(self, name: &str, v: bool) -> Self {
        self.word(name, v.to_string(), !v)
    }
    fn float(self, name: &str, v: f32) -> Self {
        // Rust prints the shortest round-tripping form, as protoc does (1, 0.75, 0.25).
        self.word(name, v.to_string(), v == 0.0)
    }
    fn msg(mut self, name: &str, v: Fields) -> Self {
        self.0.push((name.into(), Value::Msg(v)));
        self
    }
    fn map<'a>(
        mut self,
        name: &str,
        v: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        // protoc prints map entries sorted by key, like BTreeMap iteration.
        for (k, val) in v {
            self = self.msg(name, Out::default().str("key", k).str("value", val).0);
        }
        self
    }
    fn done(self) -> Fields {
        self.0
    }
}

/// The envelope as protoc prints it.
pub fn render_msg(m: &Msg) -> Fields {
    Out::default()
        .str("type_url", &m.type_url)
        .bytes("value", &m.value)
        .str("channel", &m.channel)
        .done()
}

/// A decoded user message (a payload of the application, not of psrpc).
#[derive(Clone, Debug, PartialEq)]
pub enum User {
    /// `google.protobuf.StringValue`, which prost maps to `String`.
    StringValue(String),
    /// `interop.EchoRequest`.
    EchoRequest(EchoRequest),
    /// `interop.EchoResponse`.
    EchoResponse(EchoResponse),
    /// `interop.ChatMsg`.
    ChatMsg(ChatMsg),
    /// `interop.Event`.
    Event(Event),
}

impl User {
    /// Decodes `bytes` as the message with full protobuf name `name`.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<User, String> {
        let err = |e: prost::DecodeError| format!("{name}: {e}");
        Ok(match name {
            "google.protobuf.StringValue" => User::StringValue(String::decode(bytes).map_err(err)?),
            "interop.EchoRequest" => User::EchoRequest(EchoRequest::decode(bytes).map_err(err)?),
            "interop.EchoResponse" => User::EchoResponse(EchoResponse::decode(bytes).map_err(err)?),
            "interop.ChatMsg" => User::ChatMsg(ChatMsg::decode(bytes).map_err(err)?),
            "interop.Event" => User::Event(Event::decode(bytes).map_err(err)?),
            other => return Err(format!("no test type for {other}")),
        })
    }

    /// Re-encodes with prost.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            User::StringValue(m) => m.encode_to_vec(),
            User::EchoRequest(m) => m.encode_to_vec(),
            User::EchoResponse(m) => m.encode_to_vec(),
            User::ChatMsg(m) => m.encode_to_vec(),
            User::Event(m) => m.encode_to_vec(),
        }
    }

    /// Renders as protoc prints it.
    pub fn render(&self) -> Fields {
        match self {
            User::StringValue(v) => Out::default().str("value", v).done(),
            User::EchoRequest(m) => Out::default().str("text", &m.text).done(),
            User::EchoResponse(m) => {
                let mut out = Out::default()
                    .str("text", &m.text)
                    .str("server_id", &m.server_id)
                    .str("remote_id", &m.remote_id)
                    .float("affinity", m.affinity);
                for r in &m.regions {
                    // Repeated strings print every element, even an empty one.
                    out.0
                        .push(("regions".into(), Value::Str(r.as_bytes().to_vec())));
                }
                out.done()
            }
            User::ChatMsg(m) => Out::default().str("text", &m.text).done(),
            User::Event(m) => Out::default().str("text", &m.text).int("seq", m.seq).done(),
        }
    }
}

/// The message inside an envelope, decoded by its type URL.
#[derive(Clone, Debug, PartialEq)]
pub enum Inner {
    /// `internal.Request`.
    Request(Request),
    /// `internal.Response`.
    Response(Response),
    /// `internal.ClaimRequest`.
    ClaimRequest(ClaimRequest),
    /// `internal.ClaimResponse`.
    ClaimResponse(ClaimResponse),
    /// `internal.Stream`.
    Stream(StreamFrame),
    /// A subscription publish: the user's message, with its full name.
    User(String, User),
}

impl Inner {
    /// Decodes `value` according to `type_url`.
    pub fn decode(type_url: &str, value: &[u8]) -> Result<Inner, String> {
        let err = |e: prost::DecodeError| format!("{type_url}: {e}");
        Ok(match type_url {
            wire::REQUEST_TYPE_URL => Inner::Request(Request::decode(value).map_err(err)?),
            wire::RESPONSE_TYPE_URL => Inner::Response(Response::decode(value).map_err(err)?),
            wire::CLAIM_REQUEST_TYPE_URL => {
                Inner::ClaimRequest(ClaimRequest::decode(value).map_err(err)?)
            }
            wire::CLAIM_RESPONSE_TYPE_URL => {
                Inner::ClaimResponse(ClaimResponse::decode(value).map_err(err)?)
            }
            wire::STREAM_TYPE_URL => Inner::Stream(StreamFrame::decode(value).map_err(err)?),
            other => {
                let name = other
                    .strip_prefix(wire::ANY_TYPE_URL_PREFIX)
                    .ok_or_else(|| format!("type URL without prefix: {other}"))?;
                Inner::User(name.to_string(), User::decode(name, value)?)
            }
        })
    }

    /// Re-encodes the inner message with prost.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Inner::Request(m) => m.encode_to_vec(),
            Inner::Response(m) => m.encode_to_vec(),
            Inner::ClaimRequest(m) => m.encode_to_vec(),
            Inner::ClaimResponse(m) => m.encode_to_vec(),
            Inner::Stream(m) => m.encode_to_vec(),
            Inner::User(_, u) => u.encode(),
        }
    }

    /// Builds the envelope with the crate's encoder (no route key).
    pub fn envelope(&self, type_url: &str) -> bytes::Bytes {
        match self {
            Inner::Request(m) => wire::encode_envelope(type_url, m),
            Inner::Response(m) => wire::encode_envelope(type_url, m),
            Inner::ClaimRequest(m) => wire::encode_envelope(type_url, m),
            Inner::ClaimResponse(m) => wire::encode_envelope(type_url, m),
            Inner::Stream(m) => wire::encode_envelope(type_url, m),
            Inner::User(_, User::StringValue(m)) => wire::encode_envelope(type_url, m),
            Inner::User(_, User::EchoRequest(m)) => wire::encode_envelope(type_url, m),
            Inner::User(_, User::EchoResponse(m)) => wire::encode_envelope(type_url, m),
            Inner::User(_, User::ChatMsg(m)) => wire::encode_envelope(type_url, m),
            Inner::User(_, User::Event(m)) => wire::encode_envelope(type_url, m),
        }
    }

    /// The largest number of entries in one metadata map (Go writes maps in random order).
    pub fn max_metadata_entries(&self) -> usize {
        match self {
            Inner::Request(r) => r.metadata.len(),
            Inner::Stream(StreamFrame {
                body: Some(Body::Open(o)),
                ..
            }) => o.metadata.len(),
            _ => 0,
        }
    }

    /// The bytes at a field path named by a capture's `… as Type:` decode.
    pub fn bytes_at(&self, path: &str) -> Option<&[u8]> {
        match (self, path) {
            (Inner::Request(r), "raw_request") => Some(&r.raw_request),
            (Inner::Response(r), "raw_response") => Some(&r.raw_response),
            (
                Inner::Stream(StreamFrame {
                    body: Some(Body::Message(m)),
                    ..
                }),
                "message.raw_message",
            ) => Some(&m.raw_message),
            _ => None,
        }
    }

    /// Renders as protoc prints it. Rust-only fields (1001) are printed when set, so a Go
    /// capture, which never has them, fails to match if they were decoded as set.
    pub fn render(&self) -> Fields {
        match self {
            Inner::Request(r) => Out::default()
                .str("request_id", &r.request_id)
                .str("client_id", &r.client_id)
                .int("sent_at", r.sent_at)
                .int("expiry", r.expiry)
                .boolean("multi", r.multi)
                .map("metadata", &r.metadata)
                .bytes("raw_request", &r.raw_request)
                .boolean("x_direct", r.x_direct)
                .done(),
            Inner::Response(r) => {
                let mut out = Out::default()
                    .str("request_id", &r.request_id)
                    .str("server_id", &r.server_id)
                    .int("sent_at", r.sent_at)
                    .str("error", &r.error)
                    .str("code", &r.code)
                    .bytes("raw_response", &r.raw_response);
                for d in &r.error_details {
                    let any = Out::default()
                        .str("type_url", &d.type_url)
                        .bytes("value", &d.value)
                        .done();
                    out = out.msg("error_details", any);
                }
                out.done()
            }
            Inner::ClaimRequest(c) => Out::default()
                .str("request_id", &c.request_id)
                .str("server_id", &c.server_id)
                .float("affinity", c.affinity)
                .done(),
            Inner::ClaimResponse(c) => Out::default()
                .str("request_id", &c.request_id)
                .str("server_id", &c.server_id)
                .boolean("x_cancel", c.x_cancel)
                .done(),
            Inner::Stream(s) => {
                let out = Out::default()
                    .str("stream_id", &s.stream_id)
                    .str("request_id", &s.request_id)
                    .int("sent_at", s.sent_at)
                    .int("expiry", s.expiry);
                match &s.body {
                    None => out.done(),
                    Some(Body::Open(o)) => {
                        let open = Out::default()
                            .str("node_id", &o.node_id)
                            .map("metadata", &o.metadata)
                            .int("x_window", i64::from(o.x_window))
                            .done();
                        out.msg("open", open).done()
                    }
                    Some(Body::Message(m)) => {
                        let msg = Out::default().bytes("raw_message", &m.raw_message).done();
                        out.msg("message", msg).done()
                    }
                    Some(Body::Ack(a)) => {
                        let ack = Out::default().int("x_window", i64::from(a.x_window)).done();
                        out.msg("ack", ack).done()
                    }
                    // A Rust-only keepalive never appears in a Go capture: rendering it makes the
                    // comparison fail.
                    Some(Body::XPing(_)) => out.msg("x_ping", Vec::new()).done(),
                    Some(Body::Close(c)) => {
                        let close = Out::default()
                            .str("error", &c.error)
                            .str("code", &c.code)
                            .done();
                        out.msg("close", close).done()
                    }
                }
            }
            Inner::User(_, u) => u.render(),
        }
    }
}
