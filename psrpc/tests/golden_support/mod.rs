//! Parser for the Go psrpc v0.7 wire captures in `tests/golden/`.
//!
//! The parser is strict: a line it does not recognise inside the sample sections is an error,
//! so a change of format (or a parser bug) fails loudly instead of skipping payloads.

pub mod render;
pub mod text;

/// The bus a sample was captured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// Captured by a NATS sniffer subscribed to `>`.
    Nats,
    /// Captured by a Redis sniffer with `PSUBSCRIBE *`.
    Redis,
}

/// A line of text and its 1-based line number in the capture.
#[derive(Clone, Debug)]
pub struct Located {
    /// Line number, 1-based.
    pub line: usize,
    /// The text after the line's label.
    pub text: String,
}

/// One captured payload with protoc's decode of it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Line number of the `NATS subject=…` / `REDIS channel=…` header.
    pub line: usize,
    /// Title of the `----- ` section the sample is in.
    pub section: String,
    /// Where it was captured.
    pub bus: Bus,
    /// The NATS subject or Redis channel.
    pub target: String,
    /// `len=N` from the header.
    pub len: usize,
    /// Line number of the `hex:` line.
    pub hex_line: usize,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// protoc's decode of the envelope (`Msg:` line).
    pub msg_text: Option<Located>,
    /// The type name after `inner`, when the capture gives one.
    pub inner_label: Option<String>,
    /// protoc's decode of the inner message (`inner…:` line).
    pub inner_text: Option<Located>,
    /// Indented lines below: decodes of user payloads and error details.
    pub annotations: Vec<Located>,
}

/// A command seen by `redis-cli MONITOR`.
#[derive(Clone, Debug)]
pub struct MonitorCommand {
    /// Line number.
    pub line: usize,
    /// Command name (lowercase as logged) and arguments, unescaped.
    pub args: Vec<Vec<u8>>,
}

/// A protocol line a Go client sent to NATS.
#[derive(Clone, Debug)]
pub enum NatsOp {
    /// `SUB subject [queue] sid`.
    Sub {
        /// Subject subscribed to.
        subject: String,
        /// Queue group, empty for none.
        queue: String,
    },
    /// `PUB subject len`.
    Pub {
        /// Subject published to.
        subject: String,
        /// Payload length.
        len: usize,
    },
    /// `CONNECT` and `UNSUB`, which the tests do not look into.
    Other,
}

/// A NATS protocol line with its line number.
#[derive(Clone, Debug)]
pub struct NatsLine {
    /// Line number.
    pub line: usize,
    /// What was sent.
    pub op: NatsOp,
}

/// One capture file, parsed.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// The payload samples in file order.
    pub entries: Vec<Entry>,
    /// The `redis-cli MONITOR` trailer.
    pub monitor: Vec<MonitorCommand>,
    /// The NATS protocol trailer.
    pub nats: Vec<NatsLine>,
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Preamble,
    Samples,
    NatsProtocol,
    Monitor,
}

/// Parses a capture; errors name the offending line.
pub fn parse_capture(file: &str, text: &str) -> Result<Capture, String> {
    let mut cap = Capture::default();
    let mut part = Part::Preamble;
    let mut section = String::new();
    let mut current: Option<Entry> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let err = |msg: String| format!("{file}:{line}: {msg}: {raw:?}");
        // An entry's body is its indented lines; anything else ends it.
        if let Some(entry) = current.as_mut() {
            if raw.starts_with("  ") {
                add_body_line(entry, line, raw).map_err(err)?;
                continue;
            }
            cap.entries
                .push(current.take().ok_or_else(|| err("lost entry".into()))?);
        }
        if let Some(title) = raw.strip_prefix("===== ") {
            part = if title.starts_with("NATS protocol lines") {
                Part::NatsProtocol
            } else if title.starts_with("redis-cli MONITOR") {
                Part::Monitor
            } else {
                return Err(err("unknown trailer".into()));
            };
            continue;
        }
        if let Some(title) = raw.strip_prefix("----- ") {
            if part != Part::Preamble && part != Part::Samples {
                return Err(err("sample section after a trailer".into()));
            }
            part = Part::Samples;
            section = title.to_string();
            continue;
        }
        match part {
            Part::Preamble => {}
            Part::Samples => {
                if raw.is_empty() || raw.starts_with('#') {
                    continue;
                }
                let (bus, target, len) = parse_header(raw).map_err(err)?;
                current = Some(Entry {
                    line,
                    section: section.clone(),
                    bus,
                    target,
                    len,
                    hex_line: 0,
                    payload: Vec::new(),
                    msg_text: None,
                    inner_label: None,
                    inner_text: None,
                    annotations: Vec::new(),
                });
            }
            Part::NatsProtocol => {
                if let Some(op) = parse_nats_line(raw).map_err(err)? {
                    cap.nats.push(NatsLine { line, op });
                }
            }
            Part::Monitor => {
                if raw.is_empty() || raw == "OK" {
                    continue;
                }
                let (_, rest) = raw
                    .split_once("] ")
                    .ok_or_else(|| err("no client address".into()))?;
                let args = text::redis_args(rest).map_err(err)?;
                if args.is_empty() {
                    return Err(err("no command".into()));
                }
                cap.monitor.push(MonitorCommand { line, args });
            }
        }
    }
    if let Some(entry) = current {
        cap.entries.push(entry);
    }
    for e in &cap.entries {
        if e.hex_line == 0 {
            return Err(format!("{file}:{}: sample without hex: line", e.line));
        }
    }
    Ok(cap)
}

fn parse_header(raw: &str) -> Result<(Bus, String, usize), String> {
    if let Some(rest) = raw.strip_prefix("NATS subject=\"") {
        let (subject, rest) = rest.split_once("\" reply=\"").ok_or("no reply=")?;
        let (reply, len) = rest.split_once("\" len=").ok_or("no len=")?;
        if !reply.is_empty() {
            // Go psrpc never sets NATS reply subjects (Rust peers add one only to requests and stream opens, docs/wire.md §11).
            return Err(format!("unexpected reply subject {reply:?}"));
        }
        let len = len.parse().map_err(|_| "bad len")?;
        return Ok((Bus::Nats, subject.to_string(), len));
    }
    if let Some(rest) = raw.strip_prefix("REDIS channel=\"") {
        let (channel, len) = rest.split_once("\" len=").ok_or("no len=")?;
        let len = len.parse().map_err(|_| "bad len")?;
        return Ok((Bus::Redis, channel.to_string(), len));
    }
    Err("unrecognised line in a sample section".into())
}

fn add_body_line(entry: &mut Entry, line: usize, raw: &str) -> Result<(), String> {
    let located = |text: &str| Located {
        line,
        text: text.to_string(),
    };
    if let Some(hex) = raw.strip_prefix("  hex: ") {
        if entry.hex_line != 0 {
            return Err("second hex: line".into());
        }
        entry.hex_line = line;
        entry.payload = text::hex_decode(hex.trim())?;
    } else if let Some(msg) = raw.strip_prefix("  Msg: ") {
        if entry.msg_text.is_some() {
            return Err("second Msg: line".into());
        }
        entry.msg_text = Some(located(msg));
    } else if let Some(inner) = raw.strip_prefix("  inner") {
        if entry.inner_text.is_some() {
            return Err("second inner line".into());
        }
        // `inner: …` (capture 1) or `inner package.Type: …` (capture 2).
        if let Some(rest) = inner.strip_prefix(": ") {
            entry.inner_text = Some(located(rest));
        } else if let Some(rest) = inner.strip_prefix(' ') {
            let (label, rest) = rest.split_once(": ").ok_or("inner line without colon")?;
            entry.inner_label = Some(label.to_string());
            entry.inner_text = Some(located(rest));
        } else {
            return Err("bad inner line".into());
        }
    } else if let Some(note) = raw.strip_prefix("    ") {
        entry.annotations.push(located(note));
    } else {
        return Err("unrecognised indented line".into());
    }
    Ok(())
}

fn parse_nats_line(raw: &str) -> Result<Option<NatsOp>, String> {
    // The trailer's second line describes the connections; protocol lines name a direction.
    let Some((_, proto)) = raw.split_once(" C->S ") else {
        return Ok(None);
    };
    let fields: Vec<&str> = proto.split(' ').collect();
    let op = match fields.first().copied() {
        Some("SUB") => {
            // `SUB subject queue sid`; an empty queue group shows as two spaces.
            let [_, subject, queue, _sid] = fields[..] else {
                return Err(format!("SUB with {} fields", fields.len()));
            };
            NatsOp::Sub {
                subject: subject.to_string(),
                queue: queue.to_string(),
            }
        }
        Some("PUB") => {
            let [_, subject, len] = fields[..] else {
                return Err(format!("PUB with {} fields", fields.len()));
            };
            NatsOp::Pub {
                subject: subject.to_string(),
                len: len.parse().map_err(|_| "bad PUB length")?,
            }
        }
        Some("CONNECT" | "UNSUB") => NatsOp::Other,
        other => return Err(format!("unknown NATS op {other:?}")),
    };
    Ok(Some(op))
}

/// The value of `key="…"` in a section title, e.g. `region`.
pub fn title_value<'a>(title: &'a str, key: &str) -> Option<&'a str> {
    let start = title.find(&format!("{key}=\""))? + key.len() + 2;
    let len = title[start..].find('"')?;
    Some(&title[start..start + len])
}
