//! Channel naming (docs/wire.md §4): one logical [`Channel`], two spellings.
//!
//! Redis and the in-process bus use the "pipe" spelling (`Svc|Method|topic|REQ`); NATS uses a
//! subject per service and topic tuple (`SRV.Svc.topic[.Q]`) plus a route key carried inside the
//! envelope (`Method.REQ`). Every user-supplied part goes through [`sanitize`], so a hostile topic
//! cannot name another service's channel.
//!
//! A channel may live in a [`Namespace`] (set by the [`Namespaced`](crate::bus::Namespaced) bus
//! wrapper): both spellings then start with the namespace, in a form no channel without one can
//! take (see [`Channel::in_namespace`]). Without a namespace the names are exactly Go's.
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
    /// Sanitised namespace segments joined by `:` (outermost first); `None` is Go's wire.
    namespace: Option<Arc<str>>,
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
            namespace: None,
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
            namespace: None,
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

    /// This channel inside `namespace`. A channel already in a namespace moves into
    /// `namespace` with it (`outer` then `inner`), so a wrapped bus can never reach outside
    /// its wrapper's namespace.
    ///
    /// The pipe spelling gains the prefix `ns:` (`:` never occurs in a sanitised part, so no
    /// channel without a namespace is spelled this way), the NATS subject the prefix `NS.ns.`
    /// (a first token other than `SRV` or `CLI`).
    ///
    /// ```
    /// use psrpc::{Channel, channel::Namespace};
    ///
    /// let staging = Namespace::new("staging").unwrap();
    /// let ch = Channel::request("foo", "bar", ["a"], true).in_namespace(&staging);
    /// assert_eq!(ch.pipe_name(), "staging:foo|bar|a|REQ");
    /// assert_eq!(ch.nats_subject(), "NS.staging.SRV.foo.a.Q");
    /// assert_eq!(ch.namespace(), Some("staging"));
    /// ```
    #[must_use]
    pub fn in_namespace(mut self, namespace: &Namespace) -> Self {
        self.namespace = Some(match &self.namespace {
            None => namespace.0.clone(),
            Some(inner) => format!("{}:{inner}", namespace.0).into(),
        });
        self
    }

    /// The namespace: sanitised segments joined by `:`, outermost first; `None` for Go's names.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The pipe spelling used by Redis and the in-process bus (docs/wire.md §4.1).
    pub fn pipe_name(&self) -> String {
        let mut out = String::with_capacity(self.estimated_len());
        if let Some(ns) = &self.namespace {
            out.push_str(ns);
            out.push(':');
        }
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
        if let Some(ns) = &self.namespace {
            for segment in ns.split(':') {
                out.push_str("NS.");
                out.push_str(segment);
                out.push('.');
            }
        }
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
        self.namespace.as_ref().map_or(0, |ns| ns.len() + 4)
            + self.service.len()
            + self.node.len()
            + self.topics.iter().map(|t| t.len() + 1).sum::<usize>()
            + 10
    }
}

/// A deployment's namespace on a shared broker: channels in different namespaces never meet.
///
/// Any non-empty string is accepted and sanitised like a topic, so a namespace cannot spell a
/// separator and escape into another one.
///
/// ```
/// use psrpc::channel::Namespace;
///
/// assert_eq!(Namespace::new("eu.prod").unwrap().as_str(), "euu+002eprod");
/// assert!(Namespace::new("").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// The namespace called `name` (sanitised).
    ///
    /// # Errors
    /// [`InvalidNamespace`] when `name` is empty.
    pub fn new(name: &str) -> Result<Self, InvalidNamespace> {
        if name.is_empty() {
            return Err(InvalidNamespace);
        }
        Ok(Namespace(sanitize(name).into()))
    }

    /// The sanitised name, as it appears on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An empty namespace was given: use no namespace for Go's channel names instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a namespace must not be empty (leave it out for Go's channel names)")]
pub struct InvalidNamespace;

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
    fn namespaces_nest_and_stay_apart_from_go_names() {
        let outer = Namespace::new("prod").unwrap();
        let inner = Namespace::new("tenant1").unwrap();
        let ch = Channel::claim("foo", "id1")
            .in_namespace(&inner)
            .in_namespace(&outer);
        assert_eq!(ch.pipe_name(), "prod:tenant1:foo|id1|CLAIM");
        assert_eq!(ch.nats_subject(), "NS.prod.NS.tenant1.CLI.foo.id1.CLAIM");
        // A Go service called like the namespace keeps its own names.
        let go = Channel::request("NS", "bar", ["prod", "SRV", "foo"], false);
        let ns = Channel::request("foo", "bar", NO_TOPICS, false).in_namespace(&outer);
        assert_ne!(go.nats_subject(), ns.nats_subject());
        assert_ne!(go.pipe_name(), ns.pipe_name());
        assert_eq!(Namespace::new(""), Err(InvalidNamespace));
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
        let ns = Namespace::new("a:b|c.>").unwrap();
        let ch = Channel::request("foo", "bar", ["t"], false).in_namespace(&ns);
        assert_eq!(ch.pipe_name().matches([':', '|']).count(), 4);
        assert_eq!(
            ch.nats_subject(),
            "NS.au+003abu+007ccu+002eu+003e.SRV.foo.t"
        );
        let ch = Channel::response("foo", "x.>");
        assert_eq!(ch.nats_subject(), "CLI.foo.xu+002eu+003e.RES");
    }
}
