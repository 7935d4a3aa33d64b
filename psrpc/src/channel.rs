//! Channel naming (docs/wire.md §4): one logical [`Channel`], two spellings.
//!
//! Redis and the in-process bus use the "pipe" spelling (`Svc|Method|topic|REQ`); NATS uses a
//! subject per service and topic tuple (`SRV.Svc.topic[.Q]`) plus a route key carried inside the
//! envelope (`Method.REQ`). Every user-supplied part goes through [`sanitize`], so a hostile topic
//! cannot name another service's channel.
//!
//! ```
//! use psrpc::Channel;
//!
//! let ch = Channel::request("foo", "bar", ["a", "b", "c"], true);
//! assert_eq!(ch.pipe_name(), "foo|bar|a|b|c|REQ");
//! assert_eq!(ch.nats_subject(), "SRV.foo.a.b.c.Q");
//! assert_eq!(ch.route_key().as_deref(), Some("bar.REQ"));
//! ```

use std::fmt::Write as _;
use std::sync::Arc;

/// What a channel carries, which also decides who subscribes to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Requests and subscription messages, to servers or subscribers (`REQ`).
    Request,
    /// Claim responses, to the servers of a claim method (`RCLAIM`).
    ClaimResponse,
    /// Stream frames to stream servers (`STR`).
    ServerStream,
    /// Responses, to one client (`RES`).
    Response,
    /// Claim requests, to one client (`CLAIM`).
    Claim,
    /// Stream frames to one client (`STR`).
    ClientStream,
}

impl ChannelKind {
    /// The suffix naming this kind on the wire.
    pub fn suffix(self) -> &'static str {
        match self {
            ChannelKind::Request => "REQ",
            ChannelKind::ClaimResponse => "RCLAIM",
            ChannelKind::ServerStream | ChannelKind::ClientStream => "STR",
            ChannelKind::Response => "RES",
            ChannelKind::Claim => "CLAIM",
        }
    }

    /// True for channels that servers (or subscribers) listen on, false for a client's own.
    pub fn is_server_side(self) -> bool {
        matches!(
            self,
            ChannelKind::Request | ChannelKind::ClaimResponse | ChannelKind::ServerStream
        )
    }
}

/// A logical channel on a bus; each bus spells it its own way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Channel {
    service: Arc<str>,
    /// The method for server-side kinds, the client ID for client-side kinds.
    node: Arc<str>,
    topics: Vec<String>,
    kind: ChannelKind,
    queue: bool,
}

impl Channel {
    fn server(
        service: impl Into<Arc<str>>,
        method: impl Into<Arc<str>>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        kind: ChannelKind,
        queue: bool,
    ) -> Self {
        Channel {
            service: service.into(),
            node: method.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            kind,
            queue,
        }
    }

    fn client(
        service: impl Into<Arc<str>>,
        client_id: impl Into<Arc<str>>,
        kind: ChannelKind,
    ) -> Self {
        Channel {
            service: service.into(),
            node: client_id.into(),
            topics: Vec::new(),
            kind,
            queue: false,
        }
    }

    /// The request channel of a method: requests and subscription messages.
    ///
    /// `queue` selects queue delivery (one receiver per message) and, on NATS, the `.Q` subject.
    pub fn request(
        service: impl Into<Arc<str>>,
        method: impl Into<Arc<str>>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        queue: bool,
    ) -> Self {
        Self::server(service, method, topics, ChannelKind::Request, queue)
    }

    /// The claim-response channel of a method (never queue-routed).
    pub fn claim_response(
        service: impl Into<Arc<str>>,
        method: impl Into<Arc<str>>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::server(service, method, topics, ChannelKind::ClaimResponse, false)
    }

    /// The channel carrying stream frames to the servers of a method (never queue-routed).
    pub fn server_stream(
        service: impl Into<Arc<str>>,
        method: impl Into<Arc<str>>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::server(service, method, topics, ChannelKind::ServerStream, false)
    }

    /// A client's response channel.
    pub fn response(service: impl Into<Arc<str>>, client_id: impl Into<Arc<str>>) -> Self {
        Self::client(service, client_id, ChannelKind::Response)
    }

    /// A client's claim channel.
    pub fn claim(service: impl Into<Arc<str>>, client_id: impl Into<Arc<str>>) -> Self {
        Self::client(service, client_id, ChannelKind::Claim)
    }

    /// A client's stream channel.
    pub fn client_stream(service: impl Into<Arc<str>>, client_id: impl Into<Arc<str>>) -> Self {
        Self::client(service, client_id, ChannelKind::ClientStream)
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method (server-side kinds) or client ID (client-side kinds).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The topics, unsanitised (server-side kinds only).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// What the channel carries.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// True when messages go to one receiver among the subscribers.
    pub fn is_queue(&self) -> bool {
        self.queue
    }

    /// The pipe spelling used by Redis and the in-process bus (docs/wire.md §4.1).
    pub fn pipe_name(&self) -> String {
        let mut out = String::with_capacity(self.estimated_len());
        push_sanitized(&mut out, &self.service);
        for part in std::iter::once(&*self.node).chain(self.topics.iter().map(String::as_str)) {
            if !part.is_empty() {
                out.push('|');
                push_sanitized(&mut out, part);
            }
        }
        out.push('|');
        out.push_str(self.kind.suffix());
        out
    }

    /// The NATS subject (docs/wire.md §4.2).
    ///
    /// The service name is not sanitised (Go does not either); topics and client IDs are.
    pub fn nats_subject(&self) -> String {
        let mut out = String::with_capacity(self.estimated_len() + 4);
        if self.kind.is_server_side() {
            out.push_str("SRV.");
            out.push_str(&self.service);
            for topic in self.topics.iter().filter(|t| !t.is_empty()) {
                out.push('.');
                push_sanitized(&mut out, topic);
            }
            if self.queue && self.kind == ChannelKind::Request {
                out.push_str(".Q");
            }
        } else {
            out.push_str("CLI.");
            out.push_str(&self.service);
            out.push('.');
            push_sanitized(&mut out, &self.node);
            out.push('.');
            out.push_str(self.kind.suffix());
        }
        out
    }

    /// The NATS route key carried in `Msg.channel`, for server-side kinds.
    pub fn route_key(&self) -> Option<String> {
        self.kind
            .is_server_side()
            .then(|| route_key(&self.node, self.kind))
    }

    fn estimated_len(&self) -> usize {
        self.service.len()
            + self.node.len()
            + self.topics.iter().map(|t| t.len() + 1).sum::<usize>()
            + 10
    }
}

/// The route key for `method` and a server-side `kind`, e.g. `Echo.REQ`.
pub fn route_key(method: &str, kind: ChannelKind) -> String {
    let suffix = kind.suffix();
    let mut key = String::with_capacity(method.len() + 1 + suffix.len());
    key.push_str(method);
    key.push('.');
    key.push_str(suffix);
    key
}

/// Sanitises one channel part: `[0-9A-Za-z_]` stays, any other character becomes `u+XXXX`
/// (below U+10000) or `U+XXXXXXXX`, lowercase hex.
///
/// ```
/// assert_eq!(psrpc::channel::sanitize("eu-west.1/🚀"), "euu+002dwestu+002e1u+002fU+0001f680");
/// ```
pub fn sanitize(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    push_sanitized(&mut out, part);
    out
}

fn push_sanitized(out: &mut String, part: &str) {
    if part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        out.push_str(part);
        return;
    }
    for c in part.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if (c as u32) < 0x10000 {
            // Writing into a String cannot fail.
            let _ = write!(out, "u+{:04x}", c as u32);
        } else {
            let _ = write!(out, "U+{:08x}", c as u32);
        }
    }
}

/// Sanitises a part given as raw bytes: invalid UTF-8 sequences count as U+FFFD, as in Go.
pub fn sanitize_bytes(part: &[u8]) -> String {
    sanitize(&String::from_utf8_lossy(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_TOPICS: [&str; 0] = [];

    /// Every vector of docs/wire.md §4.3 (service `foo`, method or client id `bar`).
    #[test]
    fn wire_md_vectors() {
        let cases: Vec<(Channel, &str, &str, Option<&str>)> = vec![
            (
                Channel::response("foo", "bar"),
                "foo|bar|RES",
                "CLI.foo.bar.RES",
                None,
            ),
            (
                Channel::claim("foo", "bar"),
                "foo|bar|CLAIM",
                "CLI.foo.bar.CLAIM",
                None,
            ),
            (
                Channel::client_stream("foo", "bar"),
                "foo|bar|STR",
                "CLI.foo.bar.STR",
                None,
            ),
            (
                Channel::request("foo", "bar", NO_TOPICS, false),
                "foo|bar|REQ",
                "SRV.foo",
                Some("bar.REQ"),
            ),
            (
                Channel::claim_response("foo", "bar", NO_TOPICS),
                "foo|bar|RCLAIM",
                "SRV.foo",
                Some("bar.RCLAIM"),
            ),
            (
                Channel::server_stream("foo", "bar", NO_TOPICS),
                "foo|bar|STR",
                "SRV.foo",
                Some("bar.STR"),
            ),
            (
                Channel::request("foo", "bar", ["a", "b", "c"], false),
                "foo|bar|a|b|c|REQ",
                "SRV.foo.a.b.c",
                Some("bar.REQ"),
            ),
            (
                Channel::request("foo", "bar", ["a", "b", "c"], true),
                "foo|bar|a|b|c|REQ",
                "SRV.foo.a.b.c.Q",
                Some("bar.REQ"),
            ),
        ];
        for (ch, pipe, subject, key) in cases {
            assert_eq!(ch.pipe_name(), pipe, "{ch:?}");
            assert_eq!(ch.nats_subject(), subject, "{ch:?}");
            assert_eq!(ch.route_key().as_deref(), key, "{ch:?}");
        }
    }

    #[test]
    fn sanitiser_vector() {
        let joined = ["🚀_É", "🛰_bar", "软件", "END"]
            .iter()
            .map(|p| sanitize(p))
            .collect::<Vec<_>>()
            .join(".");
        assert_eq!(joined, "U+0001f680_u+00c9.U+0001f6f0_bar.u+8f6fu+4ef6.END");
        assert_eq!(sanitize("."), "u+002e");
        assert_eq!(sanitize("+"), "u+002b");
        assert_eq!(sanitize_bytes(b"a\xffb"), "au+fffdb");
    }

    #[test]
    fn empty_topics_are_skipped() {
        let a = Channel::request("foo", "bar", ["a", "", "b"], false);
        let b = Channel::request("foo", "bar", ["a", "b"], false);
        assert_eq!(a.pipe_name(), b.pipe_name());
        assert_eq!(a.nats_subject(), b.nats_subject());
    }

    #[test]
    fn hostile_topics_cannot_escape_their_part() {
        for hostile in ["a|b|RES", "a.b.>", "*", ">", "x y", "CLI.foo.bar.RES"] {
            let ch = Channel::request("foo", "bar", [hostile], false);
            let pipe = ch.pipe_name();
            assert_eq!(pipe.matches('|').count(), 3, "{pipe}");
            let subject = ch.nats_subject();
            assert_eq!(subject.matches('.').count(), 2, "{subject}");
            assert!(!subject.contains(['*', '>', ' ']), "{subject}");
        }
        let ch = Channel::response("foo", "x.>");
        assert_eq!(ch.nats_subject(), "CLI.foo.xu+002eu+003e.RES");
    }
}
