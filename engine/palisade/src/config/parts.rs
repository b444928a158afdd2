//! A configuration file in parts, so that a file of a million monitors is
//! never one tree in memory: the `[[monitor]]` tables are read in batches
//! of [`MONITORS_PER_PART`], each parsed on its own, and the rest of the file
//! (`[scan]`, `[store]`, `[[sink]]`, `[http]`, `[cluster]`) is parsed with the
//! monitors' text blanked out (newlines kept), so that every byte offset, and
//! so every line an error names, is the file's own.
//!
//! The table headers are found with TOML's own lexer (`toml_parser`): a
//! `[[monitor]]` inside a multi-line string is a string, not a header. A
//! monitor's part runs from its `[[monitor]]` header to the next header that
//! is not the monitor's (any header whose key starts with `monitor`, such as
//! `[monitor.x]`, belongs to the monitor before it, as in TOML).

use std::borrow::Cow;
use std::ops::Range;

use toml_parser::Source;
use toml_parser::lexer::TokenKind;

/// How many `[[monitor]]` tables one part holds at most.
pub(super) const MONITORS_PER_PART: usize = 4096;

/// One part of `[[monitor]]` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// Where it is in the file: from its first `[[monitor]]` header to the
    /// end of its last monitor.
    pub range: Range<usize>,
    /// How many `[[monitor]]` tables it holds.
    pub monitors: usize,
}

/// The file split: the rest (the monitors' text blanked out, or cut off
/// when nothing but monitors follows them) and the parts.
#[derive(Debug)]
pub(super) struct Parts<'t> {
    pub rest: Cow<'t, str>,
    pub parts: Vec<Part>,
}

/// A table header at the start of a line: where it starts, whether it is an
/// array of tables (`[[...]]`), and its first key.
struct Header<'t> {
    start: usize,
    array: bool,
    first_key: &'t str,
    /// It has more than one key (`[monitor.x]`).
    dotted: bool,
}

/// Every table header of `text`, in order: a `[` that starts a line outside
/// any array or inline table value.
fn headers(text: &str) -> Vec<Header<'_>> {
    let tokens: Vec<_> = Source::new(text).lex().collect();
    let mut out = Vec::new();
    let mut line_start = true;
    // Brackets and braces open in a value (an array over several lines).
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let kind = tokens[i].kind();
        match kind {
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket
                if !(line_start && depth == 0) =>
            {
                depth += 1;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1);
            }
            TokenKind::Newline => {
                line_start = true;
                i += 1;
                continue;
            }
            TokenKind::Whitespace | TokenKind::Comment => {
                i += 1;
                continue;
            }
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                let start = tokens[i].span().start();
                let array = tokens
                    .get(i + 1)
                    .is_some_and(|t| t.kind() == TokenKind::LeftSquareBracket);
                let mut j = i + if array { 2 } else { 1 };
                let mut keys = 0;
                let mut first_key = "";
                while let Some(t) = tokens.get(j) {
                    match t.kind() {
                        TokenKind::RightSquareBracket | TokenKind::Newline => break,
                        TokenKind::Atom | TokenKind::BasicString | TokenKind::LiteralString => {
                            if keys == 0 {
                                let span = t.span();
                                first_key = text.get(span.start()..span.end()).unwrap_or("");
                            }
                            keys += 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                out.push(Header {
                    start,
                    array,
                    first_key: first_key.trim_matches(|c| c == '"' || c == '\''),
                    dotted: keys > 1,
                });
                // The rest of the header line is not another header.
                line_start = false;
                i = j;
                continue;
            }
            _ => {}
        }
        line_start = false;
        i += 1;
    }
    out
}

/// Splits `text` into the rest and parts of at most `per_part` monitors;
/// `None` when it has no `[[monitor]]` table.
pub(super) fn split(text: &str, per_part: usize) -> Option<Parts<'_>> {
    let headers = headers(text);
    // The monitors' spans: each from its `[[monitor]]` header to the next
    // header that is not the monitor's own.
    let mut monitors: Vec<Range<usize>> = Vec::new();
    let mut open: Option<usize> = None;
    for h in &headers {
        let monitor_key = h.first_key == "monitor";
        if monitor_key && h.array && !h.dotted {
            if let Some(start) = open.take() {
                monitors.push(start..h.start);
            }
            open = Some(h.start);
        } else if monitor_key && open.is_some() {
            // The monitor's own sub-table.
        } else if let Some(start) = open.take() {
            monitors.push(start..h.start);
        }
    }
    if let Some(start) = open {
        monitors.push(start..text.len());
    }
    if monitors.is_empty() {
        return None;
    }
    // Consecutive monitors (nothing between them) share a part.
    let mut parts: Vec<Part> = Vec::new();
    for m in monitors {
        match parts.last_mut() {
            Some(p) if p.range.end == m.start && p.monitors < per_part => {
                p.range.end = m.end;
                p.monitors += 1;
            }
            _ => parts.push(Part {
                range: m,
                monitors: 1,
            }),
        }
    }
    let first = parts[0].range.start;
    let contiguous_to_end = parts.windows(2).all(|w| w[0].range.end == w[1].range.start)
        && parts.last().is_some_and(|p| p.range.end == text.len());
    let rest = if contiguous_to_end {
        Cow::Borrowed(&text[..first])
    } else {
        let mut blanked = text.as_bytes().to_vec();
        for p in &parts {
            for b in &mut blanked[p.range.clone()] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        // Only ASCII bytes were written over whole tables: still UTF-8.
        Cow::Owned(String::from_utf8(blanked).unwrap_or_default())
    };
    Some(Parts { rest, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'t>(text: &'t str, parts: &Parts<'t>) -> Vec<&'t str> {
        parts.parts.iter().map(|p| &text[p.range.clone()]).collect()
    }

    #[test]
    fn monitors_are_cut_into_parts_and_the_rest_keeps_its_offsets() {
        let text = "[scan]\nrate = [\n[1],\n]\n\n[[monitor]]\nname = \"a\"\n[monitor.x]\ny = 1\n\
                    [[monitor]]\nname = \"b\"\n\n[[sink]]\nkind = \"jsonl\"\n\
                    [[ monitor ]] # c\nname = \"c\"\ns = \"\"\"\n[[monitor]]\n\"\"\"\n";
        let parts = split(text, 10).unwrap();
        assert_eq!(
            texts(text, &parts),
            [
                "[[monitor]]\nname = \"a\"\n[monitor.x]\ny = 1\n[[monitor]]\nname = \"b\"\n\n",
                "[[ monitor ]] # c\nname = \"c\"\ns = \"\"\"\n[[monitor]]\n\"\"\"\n",
            ]
        );
        assert_eq!(
            parts.parts.iter().map(|p| p.monitors).collect::<Vec<_>>(),
            [2, 1],
            "a [[monitor]] in a string is no header"
        );
        assert_eq!(parts.rest.len(), text.len(), "blanked, not cut");
        assert_eq!(parts.rest.lines().count(), text.lines().count());
        assert!(parts.rest.starts_with("[scan]\nrate = [\n[1],\n]\n\n   "));
        assert!(parts.rest.contains("\n[[sink]]\nkind = \"jsonl\"\n"));
        assert!(!parts.rest.contains("monitor"));
    }

    #[test]
    fn monitors_at_the_end_are_cut_off_and_parts_are_bounded() {
        let mut text = String::from("[store]\npath = \"x\"\n");
        for i in 0..5 {
            text.push_str(&format!("[[monitor]]\nname = \"m{i}\"\n"));
        }
        let parts = split(&text, 2).unwrap();
        assert_eq!(parts.rest, "[store]\npath = \"x\"\n");
        assert_eq!(
            parts.parts.iter().map(|p| p.monitors).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert!(texts(&text, &parts)[2].starts_with("[[monitor]]\nname = \"m4\""));
        assert!(split("[scan]\n[monitor]\nx = 1\n", 2).is_none());
    }
}
