//! Doc comments of generated items, from the proto comments.

use proc_macro2::TokenStream;
use quote::quote;

/// Doc attributes from proto comments. Lines are trimmed so indented text never becomes a
/// doctest, and fenced blocks are marked `text` for the same reason.
pub(super) fn doc_attrs(lines: &[String]) -> TokenStream {
    let mut fenced = false;
    let lines = lines.iter().map(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("```") {
            fenced = !fenced;
            if fenced {
                return format!(" ```text {rest}").trim_end().to_owned();
            }
        }
        if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        }
    });
    let lines: Vec<String> = lines.collect();
    quote! { #(#[doc = #lines])* }
}

/// A method's own docs ahead of the generated ones: its doc attributes and an empty line
/// that separates them, or nothing when the proto gives it no comment.
pub(super) fn lead_docs(lines: &[String]) -> TokenStream {
    if lines.is_empty() {
        return TokenStream::new();
    }
    let docs = doc_attrs(lines);
    quote! {
        #docs
        ///
    }
}

/// The proto comments of an item, or `fallback` when it has none (no line for an empty
/// `fallback`).
pub(super) fn docs(comments: &prost_build::Comments, fallback: String) -> Vec<String> {
    let mut lines: Vec<String> = comments
        .leading
        .iter()
        .flat_map(|c| c.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines.remove(0);
    }
    if lines.is_empty() && !fallback.is_empty() {
        lines.push(fallback);
    }
    lines
}
