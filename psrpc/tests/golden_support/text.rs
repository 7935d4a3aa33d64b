//! The protobuf text format printed by `protoc --decode` in the captures, with newlines replaced
//! by ` | `, and the two escaping schemes found in the captures (protoc's C escapes, redis-cli's).

/// A field value in text format.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A quoted string or bytes field, unescaped.
    Str(Vec<u8>),
    /// A bare scalar (number, bool, enum name), as printed.
    Word(String),
    /// A nested message (`name { … }`).
    Msg(Fields),
}

/// Fields in the order printed; repeated fields and map entries appear once per element.
pub type Fields = Vec<(String, Value)>;

/// `path as type.Name: fields`: protoc's decode of the bytes at `path` as a user message.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    /// Field path of the bytes, e.g. `raw_request` or `message.raw_message`.
    pub path: String,
    /// Full protobuf name of the message the bytes were decoded as.
    pub type_name: String,
    /// The decoded fields.
    pub fields: Fields,
}

/// A parsed text-format line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextMsg {
    /// The top-level fields.
    pub fields: Fields,
    /// Inline `… as Type:` decodes (capture 1 prints them on the same line).
    pub annotations: Vec<Annotation>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(Vec<u8>),
    Colon,
    Open,
    Close,
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'|' | b':' | b'{' | b'}' | b'"')
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            // `|` stands for a newline in the captures; outside quotes it separates like a space.
            b' ' | b'\t' | b'|' => i += 1,
            b':' => {
                out.push(Tok::Colon);
                i += 1;
            }
            b'{' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'}' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'"' => {
                let (bytes, next) = unquote_c(b, i + 1)?;
                out.push(Tok::Str(bytes));
                i = next;
            }
            _ => {
                let start = i;
                while i < b.len() && !is_delimiter(b[i]) {
                    i += 1;
                }
                // All delimiters are ASCII, so these are char boundaries.
                out.push(Tok::Word(s[start..i].to_string()));
            }
        }
    }
    Ok(out)
}

/// Reads a C-escaped string body starting after the opening quote; returns the bytes and the
/// index after the closing quote.
fn unquote_c(b: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::new();
    loop {
        let Some(&c) = b.get(i) else {
            return Err("unterminated string".into());
        };
        i += 1;
        match c {
            b'"' => return Ok((out, i)),
            b'\\' => {
                let Some(&e) = b.get(i) else {
                    return Err("dangling backslash".into());
                };
                i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'v' => out.push(0x0b),
                    b'"' | b'\'' | b'\\' => out.push(e),
                    b'0'..=b'7' => {
                        // Up to three octal digits, as protoc prints non-printable bytes.
                        let mut v = u32::from(e - b'0');
                        for _ in 0..2 {
                            match b.get(i) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(u8::try_from(v).map_err(|_| format!("octal escape {v} > 255"))?);
                    }
                    b'x' => {
                        let (v, next) = hex_escape(b, i)?;
                        out.push(v);
                        i = next;
                    }
                    other => return Err(format!("unknown escape \\{}", other as char)),
                }
            }
            _ => out.push(c),
        }
    }
}

fn hex_escape(b: &[u8], i: usize) -> Result<(u8, usize), String> {
    let digits = b.get(i..i + 2).ok_or("short \\x escape")?;
    let text = std::str::from_utf8(digits).map_err(|_| "bad \\x escape")?;
    let v = u8::from_str_radix(text, 16).map_err(|_| format!("bad \\x escape {text:?}"))?;
    Ok((v, i + 2))
}

/// Parses one text-format line (fields separated by ` | `).
pub fn parse(s: &str) -> Result<TextMsg, String> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let msg = parse_fields(&toks, &mut pos, 0)?;
    if pos != toks.len() {
        return Err(format!("trailing tokens after field {pos}"));
    }
    Ok(msg)
}

fn parse_fields(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<TextMsg, String> {
    let mut msg = TextMsg::default();
    loop {
        match toks.get(*pos) {
            None if depth == 0 => return Ok(msg),
            None => return Err("unclosed {".into()),
            Some(Tok::Close) if depth > 0 => {
                *pos += 1;
                return Ok(msg);
            }
            Some(Tok::Word(name)) => {
                *pos += 1;
                match toks.get(*pos) {
                    Some(Tok::Colon) => {
                        *pos += 1;
                        let value = match toks.get(*pos) {
                            Some(Tok::Str(bytes)) => Value::Str(bytes.clone()),
                            Some(Tok::Word(word)) => Value::Word(word.clone()),
                            other => return Err(format!("field {name}: bad value {other:?}")),
                        };
                        *pos += 1;
                        msg.fields.push((name.clone(), value));
                    }
                    Some(Tok::Open) => {
                        *pos += 1;
                        let nested = parse_fields(toks, pos, depth + 1)?;
                        if !nested.annotations.is_empty() {
                            return Err(format!("field {name}: nested `as` decode"));
                        }
                        msg.fields.push((name.clone(), Value::Msg(nested.fields)));
                    }
                    Some(Tok::Word(as_kw)) if as_kw == "as" && depth == 0 => {
                        *pos += 1;
                        let Some(Tok::Word(type_name)) = toks.get(*pos) else {
                            return Err(format!("{name} as: missing type name"));
                        };
                        *pos += 1;
                        if toks.get(*pos) != Some(&Tok::Colon) {
                            return Err(format!("{name} as {type_name}: missing colon"));
                        }
                        *pos += 1;
                        // The decode runs to the end of the line.
                        let rest = parse_fields(toks, pos, depth)?;
                        msg.annotations.push(Annotation {
                            path: name.clone(),
                            type_name: type_name.clone(),
                            fields: rest.fields,
                        });
                        msg.annotations.extend(rest.annotations);
                        return Ok(msg);
                    }
                    other => return Err(format!("field {name}: unexpected {other:?}")),
                }
            }
            Some(other) => return Err(format!("expected a field name, got {other:?}")),
        }
    }
}

/// Splits a redis-cli MONITOR argument list (`"a" "b\x00"`) into unescaped arguments.
pub fn redis_args(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' => i += 1,
            b'"' => {
                let (arg, next) = unquote_redis(b, i + 1)?;
                out.push(arg);
                i = next;
            }
            other => {
                return Err(format!(
                    "unquoted argument at byte {i} ({:?})",
                    other as char
                ));
            }
        }
    }
    Ok(out)
}

/// redis-cli quotes with `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b` and `\xNN` (sdscatrepr).
fn unquote_redis(b: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::new();
    loop {
        let Some(&c) = b.get(i) else {
            return Err("unterminated argument".into());
        };
        i += 1;
        match c {
            b'"' => return Ok((out, i)),
            b'\\' => {
                let Some(&e) = b.get(i) else {
                    return Err("dangling backslash".into());
                };
                i += 1;
                match e {
                    b'\\' | b'"' => out.push(e),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b'x' => {
                        let (v, next) = hex_escape(b, i)?;
                        out.push(v);
                        i = next;
                    }
                    other => return Err(format!("unknown redis-cli escape \\{}", other as char)),
                }
            }
            _ => out.push(c),
        }
    }
}

/// Prints fields back in the captures' one-line style, for readable failure messages.
pub fn show(fields: &Fields) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(" | ");
        }
        out.push_str(name);
        match value {
            Value::Str(bytes) => {
                out.push_str(": \"");
                for &b in bytes {
                    match b {
                        b'"' | b'\\' => {
                            out.push('\\');
                            out.push(b as char);
                        }
                        0x20..=0x7e => out.push(b as char),
                        _ => out.push_str(&format!("\\{b:03o}")),
                    }
                }
                out.push('"');
            }
            Value::Word(word) => {
                out.push_str(": ");
                out.push_str(word);
            }
            Value::Msg(nested) => {
                out.push_str(" { ");
                out.push_str(&show(nested));
                out.push_str(" }");
            }
        }
    }
    out
}

/// Decodes a lowercase or uppercase hex string.
pub fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length {}", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let pair = s.get(i..i + 2).ok_or("non-ASCII hex")?;
            u8::from_str_radix(pair, 16).map_err(|_| format!("bad hex {pair:?} at {i}"))
        })
        .collect()
}

/// Lowercase hex, for messages.
pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
