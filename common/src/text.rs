//! Untrusted text made safe to print: order ids, nack reasons and reject
//! details come from peers (or from the journal, which holds what peers
//! sent) and end up in log lines and on an operator's terminal.
//!
//! [`Escaped`] writes printable text as is and escapes what could forge or
//! rewrite output:
//! - control characters (C0, DEL, C1): a newline starts a forged log line;
//!   ESC (and its 8-bit C1 form, CSI `U+009B`) starts a terminal escape
//!   sequence that can clear the screen, move the cursor or set the title;
//! - the Unicode bidirectional overrides and isolates (`U+202A`–`U+202E`,
//!   `U+2066`–`U+2069`): they reorder how the rest of the line is *shown*
//!   ("Trojan Source"), so `id=abc reason=ok` can display as something else.
//!
//! Backslashes are not escaped: a printable id prints exactly as it is, so an
//! operator can copy it from `dlq list` into `dlq retry`. The price is that
//! `\n` in the output may also be a literal backslash and `n` in the input;
//! output meant to be parsed back uses its own encoding (JSON, `file_safe`).

use std::fmt::{self, Write};

/// Displays a string with its control and bidi characters escaped as
/// `\n`, `\r`, `\t`, `\x1b` (other C0 and DEL) or `\u{85}` (C1, bidi).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        // Write runs of safe text in one call: ids are almost always clean.
        let mut start = 0;
        for (index, c) in text.char_indices() {
            if needs_escape(c) {
                f.write_str(&text[start..index])?;
                write_escape(f, c)?;
                start = index + c.len_utf8();
            }
        }
        f.write_str(&text[start..])
    }
}

/// Whether `c` is escaped by [`Escaped`]: a control character or a bidi
/// override or isolate.
pub fn needs_escape(c: char) -> bool {
    // `char::is_control` is exactly Unicode's Cc: C0, DEL and C1.
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn write_escape(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32),
        c => write!(f, "\\u{{{:x}}}", c as u32),
    }
}

/// `text` escaped into a new `String`, for APIs that take one.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing into a String cannot fail.
    let _ = write!(out, "{}", Escaped(text));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_is_unchanged() {
        for text in ["", "order-1", "a b/c\\n", "é日本語🙂", "\u{200f}mark"] {
            assert_eq!(escaped(text), text);
        }
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(escaped("a\nb"), "a\\nb");
        assert_eq!(escaped("\r\t\0"), "\\r\\t\\x00");
        assert_eq!(escaped("\x1b[2Jx"), "\\x1b[2Jx");
        assert_eq!(escaped("\x7f"), "\\x7f");
        assert_eq!(escaped("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escaped("\u{2066}\u{2069}"), "\\u{2066}\\u{2069}");
    }

    /// The property, checked over every Unicode scalar value alone and in
    /// a mixed string: the output holds no character that needs escaping,
    /// and text without one is unchanged.
    #[test]
    fn output_never_contains_a_control_or_bidi_character() {
        let mut mixed = String::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let alone = c.to_string();
            let out = escaped(&alone);
            assert!(!out.chars().any(needs_escape), "{:x} -> {out:?}", c as u32);
            if !needs_escape(c) {
                assert_eq!(out, alone);
            }
            if (c as u32).is_multiple_of(97) || needs_escape(c) {
                mixed.push(c);
            }
        }
        assert!(!escaped(&mixed).chars().any(needs_escape));
    }

    #[test]
    fn display_composes_with_format() {
        assert_eq!(format!("[{}]", Escaped("x\ny")), "[x\\ny]");
    }
}
