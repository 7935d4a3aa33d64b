//! Golden-capture tests against a real Go psrpc v0.7 peer (captures in `tests/golden/`, copied
//! unchanged from the spec).
//!
//! For every captured payload: it decodes into the message protoc printed for it, field by
//! field; it re-encodes to the same bytes; and the NATS subject / route key or Redis channel it
//! was captured on is what [`psrpc::Channel`] produces for it. The trailers (Redis MONITOR, NATS
//! protocol lines) are checked too: Redis queue lock keys and NATS queue groups.
//!
//! Failures are collected and reported together, each as `file:line: what`, pointing at the
//! capture line that disagrees.

mod golden_support;

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};

use base64::Engine as _;
use bytes::Bytes;
use prost::Message as _;
use psrpc::Channel;
use psrpc::channel::sanitize;
use psrpc::wire::{
    self, ClaimRequest, Msg, Request, Response, StreamClose, StreamFrame, StreamOpen,
    stream_frame::Body,
};
use sha2::{Digest as _, Sha256};

use golden_support::render::{EchoRequest, Event, Inner, User, render_msg};
use golden_support::text::{self, Annotation, Fields, hex_encode, show};
use golden_support::{Bus, Capture, Entry, NatsOp, parse_capture, title_value};

/// What each capture contains; the counts make a parser that silently skips entries fail.
struct Spec {
    file: &'static str,
    text: &'static str,
    /// The proto service name, as in the capture's header.
    service: &'static str,
    /// Queue-routed methods (QUEUE RPCs, queue subscriptions): the ones on `.Q` subjects.
    queue_methods: &'static [&'static str],
    nats_entries: usize,
    redis_entries: usize,
    /// User payloads decoded: `… as Type:` lines, error details and subscription publishes.
    user_payloads: usize,
    /// Redis `SET key … EX 5 NX` queue locks in the MONITOR trailer.
    lock_keys: usize,
    /// Payloads with 2+ metadata entries, compared decoded instead of byte for byte.
    map_order_exceptions: usize,
}

const CAPTURE_1: Spec = Spec {
    file: "tests/golden/go-psrpc-v0.7-capture.txt",
    text: include_str!("golden/go-psrpc-v0.7-capture.txt"),
    service: "BenchService",
    // Echo is a claim method but not queue-routed here: its requests go to `SRV.BenchService`
    // and take no Redis lock.
    queue_methods: &["QueueEvents"],
    nats_entries: 10,
    redis_entries: 10,
    user_payloads: 14,
    lock_keys: 1,
    map_order_exceptions: 0,
};

const CAPTURE_2: Spec = Spec {
    file: "tests/golden/go-psrpc-v0.7-capture-2.txt",
    text: include_str!("golden/go-psrpc-v0.7-capture-2.txt"),
    service: "Interop",
    queue_methods: &["Fail", "RegionEcho", "Echo", "Jobs"],
    nats_entries: 47,
    redis_entries: 47,
    user_payloads: 40,
    lock_keys: 7,
    map_order_exceptions: 2,
};

/// Collects mismatches so one run reports all of them, each with its capture line.
struct Report {
    file: &'static str,
    failures: Vec<String>,
}

impl Report {
    fn new(spec: &Spec) -> Self {
        Report {
            file: spec.file,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, line: usize, msg: impl Display) {
        self.failures.push(format!("{}:{line}: {msg}", self.file));
    }

    fn eq<T: PartialEq + Debug>(&mut self, line: usize, what: &str, got: T, want: T) {
        if got != want {
            self.fail(
                line,
                format!("{what}:\n    ours:    {got:?}\n    capture: {want:?}"),
            );
        }
    }

    fn fields(&mut self, line: usize, what: &str, ours: &Fields, capture: &Fields) {
        if ours != capture {
            self.fail(
                line,
                format!(
                    "{what}:\n    ours:    {}\n    capture: {}",
                    show(ours),
                    show(capture)
                ),
            );
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} mismatch(es) against the Go capture:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn load(spec: &Spec) -> Capture {
    parse_capture(spec.file, spec.text).unwrap_or_else(|e| panic!("{e}"))
}

/// Decodes the envelope and the inner message, reporting failures at the hex line.
fn decode(r: &mut Report, e: &Entry) -> Option<(Msg, Inner)> {
    let msg = match wire::decode_envelope(Bytes::from(e.payload.clone())) {
        Ok(msg) => msg,
        Err(err) => {
            r.fail(e.hex_line, format!("envelope does not decode: {err}"));
            return None;
        }
    };
    match Inner::decode(&msg.type_url, &msg.value) {
        Ok(inner) => Some((msg, inner)),
        Err(err) => {
            r.fail(e.hex_line, format!("inner message does not decode: {err}"));
            None
        }
    }
}

/// A capture's decode of a user payload inside an entry.
enum Note {
    /// `path as Type: fields`.
    Decode(Annotation),
    /// `error_details[] Any: type_url="…" value hex=… -> Type: fields`.
    ErrorDetail {
        type_url: String,
        value: Vec<u8>,
        type_name: String,
        fields: Fields,
    },
}

/// All user-payload decodes of an entry: inline ones on the `inner` line and indented lines.
fn notes(e: &Entry) -> Result<Vec<(usize, Note)>, String> {
    let mut out = Vec::new();
    if let Some(inner) = &e.inner_text {
        let parsed = text::parse(&inner.text).map_err(|err| format!("{}: {err}", inner.line))?;
        out.extend(
            parsed
                .annotations
                .into_iter()
                .map(|a| (inner.line, Note::Decode(a))),
        );
    }
    for note in &e.annotations {
        let err = |msg: String| format!("{}: {msg}", note.line);
        if let Some(rest) = note.text.strip_prefix("error_details[] Any: type_url=\"") {
            let (type_url, rest) = rest
                .split_once("\" value hex=")
                .ok_or_else(|| err("no value hex=".into()))?;
            let (hex, rest) = rest.split_once(" -> ").ok_or_else(|| err("no ->".into()))?;
            let (type_name, fields) = rest.split_once(": ").ok_or_else(|| err("no type".into()))?;
            out.push((
                note.line,
                Note::ErrorDetail {
                    type_url: type_url.to_string(),
                    value: text::hex_decode(hex).map_err(err)?,
                    type_name: type_name.to_string(),
                    fields: text::parse(fields).map_err(err)?.fields,
                },
            ));
        } else {
            let parsed = text::parse(&note.text).map_err(err)?;
            if !parsed.fields.is_empty() || parsed.annotations.len() != 1 {
                return Err(err("expected one `path as Type: …` decode".into()));
            }
            out.extend(
                parsed
                    .annotations
                    .into_iter()
                    .map(|a| (note.line, Note::Decode(a))),
            );
        }
    }
    Ok(out)
}

fn check_id(r: &mut Report, line: usize, what: &str, id: &str, prefix: &str) {
    // docs/wire.md §3: prefix + 12 characters of [A-Za-z0-9].
    let ok = id
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !ok {
        r.fail(
            line,
            format!("{what} {id:?} is not {prefix} + 12 alphanumerics"),
        );
    }
}

fn check_ids(r: &mut Report, line: usize, inner: &Inner) {
    match inner {
        Inner::Request(m) => {
            check_id(r, line, "request_id", &m.request_id, "REQ_");
            check_id(r, line, "client_id", &m.client_id, "CLI_");
            r.eq(
                line,
                "expiry - sent_at (default 3 s timeout)",
                m.expiry - m.sent_at,
                3_000_000_000,
            );
        }
        Inner::Response(m) => {
            check_id(r, line, "request_id", &m.request_id, "REQ_");
            check_id(r, line, "server_id", &m.server_id, "SRV_");
        }
        Inner::ClaimRequest(m) => {
            check_id(r, line, "request_id", &m.request_id, "REQ_");
            check_id(r, line, "server_id", &m.server_id, "SRV_");
        }
        Inner::ClaimResponse(m) => {
            check_id(r, line, "request_id", &m.request_id, "REQ_");
            check_id(r, line, "server_id", &m.server_id, "SRV_");
        }
        Inner::Stream(m) => {
            check_id(r, line, "stream_id", &m.stream_id, "STR_");
            check_id(r, line, "request_id", &m.request_id, "REQ_");
            if let Some(Body::Open(open)) = &m.body {
                check_id(r, line, "open.node_id", &open.node_id, "CLI_");
            }
        }
        Inner::User(..) => {}
    }
}

/// Decode every payload and compare with protoc's text for the envelope, the inner message and
/// every user payload inside it.
fn check_decoding(spec: &Spec) {
    let cap = load(spec);
    let mut r = Report::new(spec);
    let (mut nats, mut redis, mut user_payloads) = (0, 0, 0);
    for e in &cap.entries {
        match e.bus {
            Bus::Nats => nats += 1,
            Bus::Redis => redis += 1,
        }
        r.eq(e.hex_line, "payload length vs len=", e.payload.len(), e.len);
        let Some((msg, inner)) = decode(&mut r, e) else {
            continue;
        };
        match &e.msg_text {
            None => r.fail(e.line, "no Msg: line"),
            Some(t) => match text::parse(&t.text) {
                Ok(parsed) => r.fields(t.line, "envelope", &render_msg(&msg), &parsed.fields),
                Err(err) => r.fail(t.line, format!("unparsable Msg: line: {err}")),
            },
        }
        let name = msg.type_url.strip_prefix(wire::ANY_TYPE_URL_PREFIX);
        if let Some(label) = &e.inner_label {
            r.eq(e.line, "inner type label", Some(label.as_str()), name);
        }
        match &e.inner_text {
            None => r.fail(e.line, "no inner line"),
            Some(t) => match text::parse(&t.text) {
                Ok(parsed) => r.fields(t.line, "inner message", &inner.render(), &parsed.fields),
                Err(err) => r.fail(t.line, format!("unparsable inner line: {err}")),
            },
        }
        check_ids(&mut r, e.hex_line, &inner);
        if let Inner::User(..) = inner {
            user_payloads += 1;
        }
        let notes = match notes(e) {
            Ok(notes) => notes,
            Err(err) => {
                r.fail(e.line, format!("bad decode line at {err}"));
                continue;
            }
        };
        let mut paths = BTreeSet::new();
        let mut detail_index = 0;
        for (line, note) in notes {
            user_payloads += 1;
            match note {
                Note::Decode(a) => {
                    paths.insert(a.path.clone());
                    let Some(bytes) = inner.bytes_at(&a.path) else {
                        r.fail(line, format!("no bytes at {} in {}", a.path, msg.type_url));
                        continue;
                    };
                    match User::decode(&a.type_name, bytes) {
                        Ok(user) => r.fields(line, &a.path, &user.render(), &a.fields),
                        Err(err) => r.fail(line, err),
                    }
                }
                Note::ErrorDetail {
                    type_url,
                    value,
                    type_name,
                    fields,
                } => {
                    let Inner::Response(resp) = &inner else {
                        r.fail(line, "error detail outside a Response");
                        continue;
                    };
                    let Some(detail) = resp.error_details.get(detail_index) else {
                        r.fail(line, format!("no error_details[{detail_index}]"));
                        continue;
                    };
                    detail_index += 1;
                    r.eq(line, "error detail type_url", &detail.type_url, &type_url);
                    r.eq(line, "error detail value", &detail.value, &value);
                    r.eq(
                        line,
                        "error detail type",
                        type_url.strip_prefix(wire::ANY_TYPE_URL_PREFIX),
                        Some(type_name.as_str()),
                    );
                    match User::decode(&type_name, &detail.value) {
                        Ok(user) => r.fields(line, "error detail", &user.render(), &fields),
                        Err(err) => r.fail(line, err),
                    }
                }
            }
        }
        // Every user payload in the capture has protoc's decode beside it; check them all.
        for path in ["raw_request", "raw_response", "message.raw_message"] {
            if inner.bytes_at(path).is_some_and(|b| !b.is_empty()) && !paths.contains(path) {
                r.fail(
                    e.line,
                    format!("{path} has no `as Type:` decode to check against"),
                );
            }
        }
        if let Inner::Response(resp) = &inner {
            r.eq(
                e.line,
                "error details checked",
                detail_index,
                resp.error_details.len(),
            );
        }
    }
    r.eq(0, "NATS payloads checked", nats, spec.nats_entries);
    r.eq(0, "Redis payloads checked", redis, spec.redis_entries);
    r.eq(
        0,
        "user payloads checked",
        user_payloads,
        spec.user_payloads,
    );
    r.finish();
}

/// Re-encode every payload: the inner message with prost, the envelope with the crate's
/// encoder (plus the route key on NATS `SRV.*` subjects), and every user payload.
fn check_reencoding(spec: &Spec) {
    let cap = load(spec);
    let mut r = Report::new(spec);
    let (mut checked, mut exceptions, mut user_payloads) = (0, 0, 0);
    for e in &cap.entries {
        let Some((msg, inner)) = decode(&mut r, e) else {
            continue;
        };
        checked += 1;
        let line = e.hex_line;
        r.eq(
            line,
            "Msg re-encoded",
            hex_encode(&msg.encode_to_vec()),
            hex_encode(&e.payload),
        );
        let route = |payload: Bytes| match msg.channel.as_str() {
            "" => payload,
            key => wire::with_route_key(&payload, key),
        };
        let raw = route(wire::encode_envelope_raw(&msg.type_url, &msg.value));
        r.eq(
            line,
            "encode_envelope_raw",
            hex_encode(&raw),
            hex_encode(&e.payload),
        );
        let ours = route(inner.envelope(&msg.type_url));
        if inner.max_metadata_entries() >= 2 {
            // Go writes map entries in random order and we sort them by key, so with 2+
            // entries only the decoded form (and the length) can match.
            exceptions += 1;
            let reencoded = inner.encode();
            r.eq(line, "inner length", reencoded.len(), msg.value.len());
            let decoded = Inner::decode(&msg.type_url, &reencoded);
            r.eq(line, "inner re-decoded", decoded.as_ref(), Ok(&inner));
            r.eq(line, "envelope length", ours.len(), e.payload.len());
            match wire::decode_envelope(ours.clone()) {
                Ok(ours_msg) => {
                    r.eq(line, "envelope type_url", &ours_msg.type_url, &msg.type_url);
                    r.eq(line, "envelope channel", &ours_msg.channel, &msg.channel);
                    let decoded = Inner::decode(&ours_msg.type_url, &ours_msg.value);
                    r.eq(line, "decoded inner", decoded.as_ref(), Ok(&inner));
                }
                Err(err) => r.fail(line, format!("our envelope does not decode: {err}")),
            }
        } else {
            r.eq(
                line,
                "inner re-encoded",
                hex_encode(&inner.encode()),
                hex_encode(&msg.value),
            );
            r.eq(
                line,
                "encode_envelope",
                hex_encode(&ours),
                hex_encode(&e.payload),
            );
        }
        let notes = match notes(e) {
            Ok(notes) => notes,
            Err(err) => {
                r.fail(e.line, format!("bad decode line at {err}"));
                continue;
            }
        };
        for (note_line, note) in notes {
            let (type_name, bytes) = match &note {
                Note::Decode(a) => (&a.type_name, inner.bytes_at(&a.path).unwrap_or_default()),
                Note::ErrorDetail {
                    type_name, value, ..
                } => (type_name, value.as_slice()),
            };
            match User::decode(type_name, bytes) {
                Ok(user) => {
                    user_payloads += 1;
                    r.eq(
                        note_line,
                        "user payload re-encoded",
                        hex_encode(&user.encode()),
                        hex_encode(bytes),
                    );
                }
                Err(err) => r.fail(note_line, err),
            }
        }
        if let Inner::User(..) = inner {
            user_payloads += 1;
        }
    }
    r.eq(
        0,
        "payloads re-encoded",
        checked,
        spec.nats_entries + spec.redis_entries,
    );
    r.eq(
        0,
        "payloads compared decoded (map order)",
        exceptions,
        spec.map_order_exceptions,
    );
    r.eq(
        0,
        "user payloads re-encoded",
        user_payloads,
        spec.user_payloads,
    );
    r.finish();
}

/// The first `key=VALUE` word in a section title (capture 1 names the client this way).
fn title_word<'a>(title: &'a str, key: &str) -> Option<&'a str> {
    let start = title.find(&format!(" {key}="))? + key.len() + 2;
    title[start..].split_whitespace().next()
}

/// Rebuild each payload's channel from what the payload is, and spell it for its bus.
fn check_naming(spec: &Spec) {
    let cap = load(spec);
    let mut r = Report::new(spec);
    let svc = spec.service;
    if !spec.text.contains(&format!("Service \"{svc}\"")) {
        r.fail(
            3,
            format!("the capture header does not name service {svc:?}"),
        );
    }
    let mut client: Option<String> = None;
    let mut checked = 0;
    for e in &cap.entries {
        let Some((msg, inner)) = decode(&mut r, e) else {
            continue;
        };
        // Reply channels belong to the client that sent the request or opened the stream.
        match &inner {
            Inner::Request(m) => client = Some(m.client_id.clone()),
            Inner::Stream(StreamFrame {
                body: Some(Body::Open(o)),
                ..
            }) => client = Some(o.node_id.clone()),
            _ => {}
        }
        let topics: Vec<String> = title_value(&e.section, "region")
            .into_iter()
            .map(String::from)
            .collect();
        // The method: the route key on NATS, the second pipe part on Redis.
        let method = match e.bus {
            Bus::Nats => msg.channel.split_once('.').map(|(m, _)| m.to_string()),
            Bus::Redis => e.target.split('|').nth(1).map(String::from),
        };
        let client_id = client.clone().unwrap_or_default();
        let to_client = match (&inner, e.bus) {
            (Inner::ClaimRequest(_) | Inner::Response(_), _) => true,
            (Inner::Stream(_), Bus::Nats) => msg.channel.is_empty(),
            (Inner::Stream(_), Bus::Redis) => method.as_deref() == Some(client_id.as_str()),
            _ => false,
        };
        let channel = if to_client {
            if client.is_none() {
                r.fail(e.line, "reply before any request named its client");
                continue;
            }
            if let Some(named) = title_word(&e.section, "client") {
                r.eq(
                    e.line,
                    "client in the section title",
                    client_id.as_str(),
                    named,
                );
            }
            match inner {
                Inner::ClaimRequest(_) => Channel::claim(svc, client_id.as_str()),
                Inner::Response(_) => Channel::response(svc, client_id.as_str()),
                _ => Channel::client_stream(svc, client_id.as_str()),
            }
        } else {
            let Some(method) = method else {
                r.fail(e.line, "no method: no route key / channel part");
                continue;
            };
            match inner {
                Inner::ClaimResponse(_) => Channel::claim_response(svc, method, topics),
                Inner::Stream(_) => Channel::server_stream(svc, method, topics),
                _ => {
                    let queue = spec.queue_methods.contains(&method.as_str());
                    Channel::request(svc, method, topics, queue)
                }
            }
        };
        checked += 1;
        match e.bus {
            Bus::Nats => {
                r.eq(
                    e.line,
                    "NATS subject",
                    channel.nats_subject(),
                    e.target.clone(),
                );
                let key = (!msg.channel.is_empty()).then(|| msg.channel.clone());
                r.eq(e.line, "route key", channel.route_key(), key.clone());
                r.eq(
                    e.line,
                    "wire::route_key",
                    wire::route_key(&e.payload),
                    key.as_deref(),
                );
            }
            Bus::Redis => {
                r.eq(
                    e.line,
                    "Redis channel",
                    channel.pipe_name(),
                    e.target.clone(),
                );
                r.eq(e.line, "route key on Redis", msg.channel.as_str(), "");
            }
        }
    }
    r.eq(
        0,
        "channels checked",
        checked,
        spec.nats_entries + spec.redis_entries,
    );
    r.finish();
}

/// All region topics named in section titles, by their sanitised spelling.
fn regions(cap: &Capture) -> Vec<(String, String)> {
    let set: BTreeSet<&str> = cap
        .entries
        .iter()
        .filter_map(|e| title_value(&e.section, "region"))
        .collect();
    set.into_iter()
        .map(|t| (sanitize(t), t.to_string()))
        .collect()
}

fn unsanitize<'a>(regions: &'a [(String, String)], part: &str) -> Option<&'a str> {
    regions
        .iter()
        .find(|(s, _)| s == part)
        .map(|(_, raw)| raw.as_str())
}

/// The Redis MONITOR trailer: publishes are the samples, queue locks are base64(SHA-256) of the
/// payload, and every (un)subscribed channel is one our naming produces.
fn check_redis_monitor(spec: &Spec) {
    let cap = load(spec);
    let mut r = Report::new(spec);
    let regions = regions(&cap);
    let samples: Vec<&Entry> = cap.entries.iter().filter(|e| e.bus == Bus::Redis).collect();
    let mut publishes = 0;
    let mut last_publish: Option<(usize, &[u8], &[u8])> = None;
    let mut locks = 0;
    let mut channels = 0;
    for cmd in &cap.monitor {
        let args: Vec<&[u8]> = cmd.args.iter().map(Vec::as_slice).collect();
        match args[..] {
            [b"publish", channel, payload] => {
                match samples.get(publishes) {
                    Some(sample) => {
                        let what = format!("publish vs sample at line {}", sample.line);
                        r.eq(cmd.line, &what, channel, sample.target.as_bytes());
                        r.eq(
                            cmd.line,
                            &what,
                            hex_encode(payload),
                            hex_encode(&sample.payload),
                        );
                    }
                    None => r.fail(cmd.line, "publish without a matching sample"),
                }
                publishes += 1;
                last_publish = Some((cmd.line, channel, payload));
            }
            [b"set", key, _value, b"ex", b"5", b"nx"] => {
                locks += 1;
                let Some((line, channel, payload)) = last_publish else {
                    r.fail(cmd.line, "lock before any publish");
                    continue;
                };
                let digest = Sha256::digest(payload);
                let want = base64::engine::general_purpose::STANDARD.encode(digest);
                let what = format!("lock key of the payload published at line {line}");
                r.eq(
                    cmd.line,
                    &what,
                    String::from_utf8_lossy(key).as_ref(),
                    want.as_str(),
                );
                // Only queue-routed deliveries take a lock (docs/wire.md §7).
                let channel = String::from_utf8_lossy(channel);
                let method = channel.split('|').nth(1).unwrap_or_default();
                if !spec.queue_methods.contains(&method) {
                    r.fail(cmd.line, format!("lock for non-queue channel {channel}"));
                }
            }
            [b"set", ..] => r.fail(cmd.line, "SET without EX 5 NX"),
            [b"subscribe" | b"unsubscribe", ref names @ ..] => {
                for name in names {
                    channels += 1;
                    let name = String::from_utf8_lossy(name);
                    match rebuild_pipe(spec.service, &regions, &name) {
                        Ok(ch) => r.eq(
                            cmd.line,
                            "subscribed channel",
                            ch.pipe_name(),
                            name.to_string(),
                        ),
                        Err(err) => r.fail(cmd.line, format!("{name}: {err}")),
                    };
                }
            }
            _ => {}
        }
    }
    r.eq(0, "publishes", publishes, samples.len());
    r.eq(0, "lock keys", locks, spec.lock_keys);
    if channels == 0 {
        r.fail(0, "no subscribe commands found");
    }
    r.finish();
}

/// Builds the channel a pipe name means, from its parts in their raw (unsanitised) form.
fn rebuild_pipe(svc: &str, regions: &[(String, String)], name: &str) -> Result<Channel, String> {
    let parts: Vec<&str> = name.split('|').collect();
    let [first, node, ref middle @ .., suffix] = parts[..] else {
        return Err("fewer than 3 parts".into());
    };
    if first != svc {
        return Err(format!("service {first:?}, want {svc:?}"));
    }
    if node.starts_with("CLI_") && middle.is_empty() {
        return match suffix {
            "RES" => Ok(Channel::response(svc, node)),
            "CLAIM" => Ok(Channel::claim(svc, node)),
            "STR" => Ok(Channel::client_stream(svc, node)),
            other => Err(format!("client channel kind {other}")),
        };
    }
    let topics = middle
        .iter()
        .map(|p| unsanitize(regions, p).ok_or_else(|| format!("unknown topic {p}")))
        .collect::<Result<Vec<_>, _>>()?;
    match suffix {
        "REQ" => Ok(Channel::request(svc, node, topics, false)),
        "RCLAIM" => Ok(Channel::claim_response(svc, node, topics)),
        "STR" => Ok(Channel::server_stream(svc, node, topics)),
        other => Err(format!("server channel kind {other}")),
    }
}

/// Client IDs differ between the NATS protocol run and the samples; both have 12 characters.
fn mask_client_ids(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("CLI_") {
        out.push_str(&rest[..i + 4]);
        let id = &rest[i + 4..];
        if id.len() >= 12 && id.as_bytes()[..12].iter().all(u8::is_ascii_alphanumeric) {
            out.push_str("<id>");
            rest = &id[12..];
        } else {
            rest = id;
        }
    }
    out.push_str(rest);
    out
}

/// The NATS protocol trailer (a separate run of the same scenario): the PUBs are the samples'
/// subjects and lengths in order; queue subscriptions, and only they, use group `bus` on `.Q`;
/// every subscribed subject is one our naming produces.
fn check_nats_protocol(spec: &Spec) {
    let cap = load(spec);
    let mut r = Report::new(spec);
    let regions = regions(&cap);
    let samples: Vec<&Entry> = cap.entries.iter().filter(|e| e.bus == Bus::Nats).collect();
    let (mut pubs, mut subs) = (0, 0);
    for l in &cap.nats {
        match &l.op {
            NatsOp::Pub { subject, len } => {
                match samples.get(pubs) {
                    Some(s) => {
                        let what = format!("PUB vs sample at line {}", s.line);
                        let want = (mask_client_ids(&s.target), s.len);
                        r.eq(l.line, &what, (mask_client_ids(subject), *len), want);
                    }
                    None => r.fail(l.line, "PUB without a matching sample"),
                }
                pubs += 1;
            }
            NatsOp::Sub { subject, queue } if subject != ">" => {
                subs += 1;
                let is_queue = subject.ends_with(".Q");
                let want_group = if is_queue { "bus" } else { "" };
                r.eq(l.line, "queue group", queue.as_str(), want_group);
                match rebuild_subject(spec.service, &regions, subject) {
                    Ok(ch) => r.eq(
                        l.line,
                        "subscribed subject",
                        ch.nats_subject(),
                        subject.clone(),
                    ),
                    Err(err) => r.fail(l.line, format!("{subject}: {err}")),
                };
            }
            NatsOp::Sub { .. } | NatsOp::Other => {}
        }
    }
    r.eq(0, "PUB lines", pubs, samples.len());
    if subs == 0 {
        r.fail(0, "no SUB lines found");
    }
    r.finish();
}

fn rebuild_subject(
    svc: &str,
    regions: &[(String, String)],
    subject: &str,
) -> Result<Channel, String> {
    if let Some(rest) = subject.strip_prefix("CLI.") {
        let parts: Vec<&str> = rest.split('.').collect();
        let [s, id, kind] = parts[..] else {
            return Err("not CLI.svc.id.kind".into());
        };
        if s != svc {
            return Err(format!("service {s:?}"));
        }
        return match kind {
            "RES" => Ok(Channel::response(svc, id)),
            "CLAIM" => Ok(Channel::claim(svc, id)),
            "STR" => Ok(Channel::client_stream(svc, id)),
            other => Err(format!("client subject kind {other}")),
        };
    }
    let rest = subject
        .strip_prefix("SRV.")
        .ok_or("neither SRV. nor CLI.")?;
    let (rest, queue) = match rest.strip_suffix(".Q") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let mut parts = rest.split('.');
    let s = parts.next().unwrap_or_default();
    if s != svc {
        return Err(format!("service {s:?}"));
    }
    let topics = parts
        .map(|p| unsanitize(regions, p).ok_or_else(|| format!("unknown topic {p}")))
        .collect::<Result<Vec<_>, _>>()?;
    // The method is not part of a NATS subject; any name gives the same subject.
    Ok(Channel::request(svc, "AnyMethod", topics, queue))
}

#[test]
fn capture_1_every_payload_decodes_as_protoc_printed_it() {
    check_decoding(&CAPTURE_1);
}

#[test]
fn capture_2_every_payload_decodes_as_protoc_printed_it() {
    check_decoding(&CAPTURE_2);
}

#[test]
fn capture_1_every_payload_reencodes_byte_for_byte() {
    check_reencoding(&CAPTURE_1);
}

#[test]
fn capture_2_every_payload_reencodes_byte_for_byte() {
    check_reencoding(&CAPTURE_2);
}

#[test]
fn capture_1_channels_are_what_our_naming_produces() {
    check_naming(&CAPTURE_1);
}

#[test]
fn capture_2_channels_are_what_our_naming_produces() {
    check_naming(&CAPTURE_2);
}

#[test]
fn capture_1_redis_monitor_publishes_locks_and_subscriptions() {
    check_redis_monitor(&CAPTURE_1);
}

#[test]
fn capture_2_redis_monitor_publishes_locks_and_subscriptions() {
    check_redis_monitor(&CAPTURE_2);
}

#[test]
fn capture_1_nats_protocol_lines() {
    check_nats_protocol(&CAPTURE_1);
}

#[test]
fn capture_2_nats_protocol_lines() {
    check_nats_protocol(&CAPTURE_2);
}

/// The sample whose header is at `line`.
fn sample_at(spec: &Spec, line: usize) -> Entry {
    load(spec)
        .entries
        .into_iter()
        .find(|e| e.line == line)
        .unwrap_or_else(|| panic!("{}:{line}: no sample header here", spec.file))
}

fn assert_sample(spec: &Spec, line: usize, subject: &str, payload: &[u8]) {
    let e = sample_at(spec, line);
    assert_eq!(e.target, subject, "{}:{line}: subject", spec.file);
    assert_eq!(
        hex_encode(payload),
        hex_encode(&e.payload),
        "{}:{line}: payload",
        spec.file
    );
}

/// Building messages from literal values (not from decoded ones) gives Go's bytes.
#[test]
fn literal_request_claim_and_response_encode_as_go_does() {
    let ping = "ping".to_string().encode_to_vec();
    let req = Request {
        request_id: "REQ_RuRZxjSnEkz9".into(),
        client_id: "CLI_TsDiORPkpsGd".into(),
        sent_at: 1_795_274_785_546_418_999,
        expiry: 1_795_274_788_546_418_999,
        raw_request: ping.clone().into(),
        ..Default::default()
    };
    let ch = Channel::request("BenchService", "Echo", Vec::<String>::new(), false);
    let key = ch.route_key().expect("server-side channel has a route key");
    let payload = wire::with_route_key(&wire::encode_envelope(wire::REQUEST_TYPE_URL, &req), &key);
    assert_sample(&CAPTURE_1, 10, &ch.nats_subject(), &payload);

    let claim = ClaimRequest {
        request_id: "REQ_6p7XQ3Q3TJcZ".into(),
        server_id: "SRV_aXyVCtCLOxXx".into(),
        affinity: 0.25,
    };
    let payload = wire::encode_envelope(wire::CLAIM_REQUEST_TYPE_URL, &claim);
    let ch = Channel::claim("Interop", "CLI_rIac5ANZBlVX");
    assert_sample(&CAPTURE_2, 52, &ch.nats_subject(), &payload);

    let resp = Response {
        request_id: "REQ_EbQdNIKqktz0".into(),
        server_id: "SRV_aXyVCtCLOxXx".into(),
        sent_at: 1_795_275_432_014_765_881,
        error: "interop: no such thing: boom".into(),
        code: "not_found".into(),
        error_details: vec![prost_types::Any {
            type_url: wire::type_url_for("google.protobuf.StringValue"),
            value: "detail:boom".to_string().encode_to_vec(),
        }],
        ..Default::default()
    };
    let payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &resp);
    let ch = Channel::response("Interop", "CLI_rIac5ANZBlVX");
    assert_sample(&CAPTURE_2, 35, &ch.nats_subject(), &payload);
}

#[test]
fn literal_stream_frames_and_publishes_encode_as_go_does() {
    let open = StreamFrame {
        stream_id: "STR_OsHyee7MYUb2".into(),
        request_id: "REQ_Tnb0gFc3NvDh".into(),
        sent_at: 1_795_275_435_022_901_398,
        expiry: 1_795_275_438_022_901_398,
        body: Some(Body::Open(StreamOpen {
            node_id: "CLI_rIac5ANZBlVX".into(),
            metadata: [("x-echo".to_string(), "s1".to_string())].into(),
            x_window: 0,
        })),
    };
    let ch = Channel::server_stream("Interop", "Chat", Vec::<String>::new());
    let key = ch.route_key().expect("server-side channel has a route key");
    let payload = wire::with_route_key(&wire::encode_envelope(wire::STREAM_TYPE_URL, &open), &key);
    assert_sample(&CAPTURE_2, 137, &ch.nats_subject(), &payload);

    let close = StreamFrame {
        stream_id: "STR_VFWzpHy04o9J".into(),
        request_id: "REQ_3eYW4mIAFBTn".into(),
        sent_at: 1_795_275_435_325_280_495,
        expiry: 1_795_275_438_325_280_495,
        body: Some(Body::Close(StreamClose {
            error: "stream closed".into(),
            code: "canceled".into(),
        })),
    };
    let payload = wire::with_route_key(&wire::encode_envelope(wire::STREAM_TYPE_URL, &close), &key);
    assert_sample(&CAPTURE_2, 240, &ch.nats_subject(), &payload);

    // A queue subscription publish: the user message itself, on the `.Q` subject.
    let event = Event {
        text: "job-1".into(),
        seq: 7,
    };
    let ch = Channel::request("Interop", "Jobs", Vec::<String>::new(), true);
    let key = ch.route_key().expect("server-side channel has a route key");
    let payload = wire::with_route_key(
        &wire::encode_envelope(&wire::type_url_for("interop.Event"), &event),
        &key,
    );
    assert_sample(&CAPTURE_2, 254, "SRV.Interop.Q", &payload);
    assert_eq!(ch.nats_subject(), "SRV.Interop.Q");

    // The sanitised region topic, on both buses.
    let region = ["eu-west.1/🚀"];
    let ch = Channel::request("Interop", "RegionEcho", region, true);
    assert_eq!(
        ch.nats_subject(),
        "SRV.Interop.euu+002dwestu+002e1u+002fU+0001f680.Q"
    );
    assert_eq!(
        ch.pipe_name(),
        "Interop|RegionEcho|euu+002dwestu+002e1u+002fU+0001f680|REQ"
    );
    let payload = wire::encode_envelope(
        &wire::type_url_for("interop.EchoRequest"),
        &EchoRequest { text: "r".into() },
    );
    assert!(payload.ends_with(b"\x12\x03\x0a\x01r"), "{payload:?}");
}

/// Go's map order in a 2-entry metadata map differs from ours; the decoded maps are equal.
#[test]
fn metadata_with_two_entries_matches_after_decoding() {
    let e = sample_at(&CAPTURE_2, 108);
    let msg = wire::decode_envelope(Bytes::from(e.payload.clone())).expect("envelope");
    let req = Request::decode(msg.value.clone()).expect("request");
    let want: std::collections::BTreeMap<String, String> = [
        ("x-echo", "v1"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(req.metadata, want);
    assert_eq!(
        User::decode("interop.EchoRequest", &req.raw_request),
        Ok(User::EchoRequest(EchoRequest {
            text: "hello".into()
        }))
    );
    // Go wrote x-echo first; our encoder sorts, so the bytes differ but have the same length.
    let ours = req.encode_to_vec();
    assert_eq!(ours.len(), msg.value.len());
    assert_ne!(ours, msg.value.to_vec());
}

#[test]
fn text_parser_reads_the_capture_syntax() {
    use golden_support::text::Value::{Msg as M, Str as S, Word as W};
    let parsed = text::parse(
        r#"a: "x\n\360\237\232\200\"" | n: -5 | m { |   k: "v" | } | e { | } | raw_request as t.T: value: "p""#,
    )
    .expect("parses");
    assert_eq!(
        parsed.fields,
        vec![
            ("a".to_string(), S(b"x\n\xf0\x9f\x9a\x80\"".to_vec())),
            ("n".to_string(), W("-5".into())),
            (
                "m".to_string(),
                M(vec![("k".to_string(), S(b"v".to_vec()))])
            ),
            ("e".to_string(), M(vec![])),
        ]
    );
    assert_eq!(parsed.annotations.len(), 1);
    assert_eq!(parsed.annotations[0].path, "raw_request");
    assert_eq!(parsed.annotations[0].type_name, "t.T");
    assert!(text::parse("a: ").is_err());
    assert!(text::parse("m { a: 1").is_err());
    assert!(text::parse(r#"a: "\q""#).is_err());
}

#[test]
fn redis_cli_escapes_are_undone() {
    let args = text::redis_args(r#""publish" "a|b" "\n$\x12\a\b\t\r\"\\\xf0""#).expect("parses");
    assert_eq!(
        args,
        vec![
            b"publish".to_vec(),
            b"a|b".to_vec(),
            b"\n$\x12\x07\x08\t\r\"\\\xf0".to_vec()
        ]
    );
    assert!(text::redis_args(r#""\q""#).is_err());
    assert!(text::redis_args(r#"bare"#).is_err());
}

#[test]
fn capture_parser_rejects_what_it_does_not_know() {
    let ok = "preamble\n----- s\nNATS subject=\"SRV.a\" reply=\"\" len=2\n  hex: 0a00\n";
    let cap = parse_capture("t", ok).expect("parses");
    assert_eq!(cap.entries.len(), 1);
    assert_eq!(cap.entries[0].payload, vec![0x0a, 0x00]);
    let unknown = "----- s\nSOMETHING else\n";
    assert!(parse_capture("t", unknown).unwrap_err().starts_with("t:2:"));
    let no_hex = "----- s\nREDIS channel=\"a|b|REQ\" len=2\n\n";
    assert!(parse_capture("t", no_hex).is_err());
    let reply = "----- s\nNATS subject=\"a\" reply=\"x\" len=2\n  hex: 0a00\n";
    assert!(parse_capture("t", reply).is_err());
}
