//! Name conversions: wire names as Go's generator spells them, Rust names as prost does.

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use proc_macro2::{Ident, Span};

/// The CamelCase of protoc-gen-go (`GoCamelCase`), used for psrpc's service and method names
/// on the wire: `_x` becomes `X`, a leading `_` becomes `X`, a `.` before a lowercase letter is
/// dropped and other dots become `_`.
pub(crate) fn go_camel_case(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 1);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next_lower = bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase);
        if c == b'.' && next_lower {
            // ".x" continues the word: the next letter is upper-cased below.
        } else if c == b'.' {
            out.push('_');
        } else if c == b'_' && (i == 0 || bytes[i - 1] == b'.') {
            out.push('X');
        } else if c == b'_' && next_lower {
            // "_x": the underscore is dropped and the letter upper-cased below.
        } else if c.is_ascii_digit() {
            out.push(c as char);
        } else {
            out.push(c.to_ascii_uppercase() as char);
            while bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase) {
                i += 1;
                out.push(bytes[i] as char);
            }
        }
        i += 1;
    }
    out
}

/// `snake_case` without keyword escaping, for names that get a prefix or suffix.
pub(crate) fn snake(s: &str) -> String {
    s.to_snake_case()
}

/// `UpperCamelCase` without keyword escaping.
pub(crate) fn upper_camel(s: &str) -> String {
    s.to_upper_camel_case()
}

/// `SCREAMING_SNAKE_CASE`, for constants.
pub(crate) fn shouty(s: &str) -> String {
    s.to_shouty_snake_case()
}

/// An identifier for `name`, escaped the way prost escapes field and type names.
pub(crate) fn ident(name: &str) -> Ident {
    match name {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => Ident::new_raw(name, Span::call_site()),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => {
            Ident::new(&format!("{name}_"), Span::call_site())
        }
        s if s.starts_with(|c: char| c.is_ascii_digit()) => {
            Ident::new(&format!("_{name}"), Span::call_site())
        }
        _ => Ident::new(name, Span::call_site()),
    }
}

/// True if `name` can become an identifier (ASCII letters, digits and `_`, not empty).
pub(crate) fn is_identifier_like(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.bytes().any(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_camel_case_follows_protoc_gen_go() {
        assert_eq!(go_camel_case("GetRoom"), "GetRoom");
        assert_eq!(go_camel_case("get_room"), "GetRoom");
        assert_eq!(go_camel_case("_get"), "XGet");
        assert_eq!(go_camel_case("get_2x"), "Get_2X");
        assert_eq!(go_camel_case("a.b"), "AB");
        assert_eq!(go_camel_case("A.B"), "A_B");
        assert_eq!(go_camel_case("ping"), "Ping");
    }

    #[test]
    fn keywords_are_escaped() {
        assert_eq!(ident("type").to_string(), "r#type");
        assert_eq!(ident("self").to_string(), "self_");
        assert_eq!(ident("get_room").to_string(), "get_room");
    }
}
