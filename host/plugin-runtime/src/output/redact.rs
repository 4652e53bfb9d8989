//! The one redactor every plugin-supplied string passes: terminal control sequences and
//! invisible characters are dropped first (they could forge log lines, repaint a terminal, or
//! split a secret so it still reads whole), then each secret the call carried, in any letter
//! case, reversed, and in its common encodings, becomes `****`.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a secret becomes.
const MASK: &str = "****";
/// Shortest encoded form matched: shorter fragments (of short secrets) would mask innocent
/// text, and a plain secret is always matched whatever its length.
const MIN_ENCODED_LEN: usize = 8;
/// RFC 3986 unreserved characters stay as they are in a URL component.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Replaces every secret, plain or encoded, with `****`. Matching is one pass of an
/// Aho-Corasick automaton over all forms of all secrets, so its cost is linear in the text.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: usize,
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    // Debug output ends up in logs; only say how many secrets there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets)
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut plain: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        plain.sort();
        plain.dedup();
        let mut forms: Vec<String> = plain.iter().flat_map(|s| encodings(s)).collect();
        forms.sort();
        forms.dedup();
        // Leftmost-longest: a secret containing another (or an encoding's core) goes whole.
        let matcher = (!forms.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                // Built for every call: an NFA builds in a fraction of a DFA's time and still
                // scans the few kilobytes a hook returns at once.
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                // `%2f` or `%2F`, `DeadBeef`, `PASSWORD`: a change of case hides nothing.
                .ascii_case_insensitive(true)
                .build(&forms)
                .expect("secret patterns are few and small")
        });
        Redactor {
            secrets: plain.len(),
            matcher,
        }
    }

    pub fn redact(&self, text: &str) -> String {
        self.redact_owned(text.to_owned())
    }

    /// Cleans and redacts `text`, without copying when there is nothing to change.
    pub fn redact_owned(&self, text: String) -> String {
        let text = strip_controls(text);
        let Some(m) = &self.matcher else {
            return text;
        };
        if !m.is_match(&text) {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        m.replace_all_with(&text, &mut out, |_, _, dst| {
            dst.push_str(MASK);
            true
        });
        out
    }

    /// Decodes captured bytes (lossily) and redacts them.
    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact_owned(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// The secret itself and the forms it takes in hex, percent-encoding and base64.
fn encodings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_owned(),
        hex::encode(bytes),
        hex::encode_upper(bytes),
    ];
    let every_byte: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
    let component = utf8_percent_encode(secret, COMPONENT).to_string();
    let alnum = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    // Form encoding (`application/x-www-form-urlencoded`) writes a space as `+`.
    let form = component.replace("%20", "+");
    for f in [every_byte, component, alnum, form] {
        forms.push(lower_escapes(&f));
        forms.push(f);
    }
    for engine in [STANDARD, URL_SAFE] {
        forms.push(engine.encode(bytes));
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            forms.push(base64_core(&engine, bytes, offset));
        }
    }
    // Printed backwards, a secret is still the secret to a reader.
    forms.push(secret.chars().rev().collect());
    let plain = forms.swap_remove(0);
    forms.retain(|f| f.len() >= MIN_ENCODED_LEN);
    forms.push(plain);
    forms
}

/// The base64 characters that depend only on `bytes` when they start `offset` bytes (0..3)
/// into a longer encoded string: neither the first characters, which mix in the bytes before,
/// nor a last one that mixes in the bytes after.
fn base64_core(engine: &impl base64::Engine, bytes: &[u8], offset: usize) -> String {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = engine.encode(&padded);
    let start = (8 * offset).div_ceil(6);
    let end = 8 * padded.len() / 6;
    encoded.get(start..end).unwrap_or_default().to_owned()
}

/// `%2F` written as `%2f`, which decoders accept as well.
fn lower_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut left = 0;
    for c in encoded.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Drops what a reader never sees but a terminal or a log parser acts on: escape sequences
/// (CSI `ESC [ … final`, OSC `ESC ] … BEL` or `ESC \\`), other control characters except
/// newline and tab, and invisible format characters (zero-width spaces and joiners, bidi
/// overrides, the byte-order mark, soft hyphens). The Unicode line and paragraph separators
/// become newlines, which every reader downstream treats as such, rather than line breaks
/// only some viewers honour (a forged log line for them, invisible to the rest).
pub(crate) fn strip_controls(text: String) -> String {
    let separator = |c: char| matches!(c, '\u{2028}' | '\u{2029}');
    if !text
        .chars()
        .any(|c| hidden(c) || separator(c) || c == '\u{1b}')
    {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            skip_escape(&mut chars);
        } else if separator(c) {
            out.push('\n');
        } else if !hidden(c) {
            out.push(c);
        }
    }
    out
}

/// Control characters, and every code point Unicode calls default-ignorable (rendered as
/// nothing: zero-width and bidi marks, variation selectors, fillers, tags, soft hyphen…), so
/// none can split a secret that still reads whole.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'..='\u{1160}'
                | '\u{17b4}'..='\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fff8}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// Consumes the rest of an escape sequence whose `ESC` was just read.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        // CSI: parameters and intermediates, then one final byte in `@`..=`~`.
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        // OSC (and DCS, SOS, PM, APC): up to BEL or the string terminator `ESC \\`.
        Some(']' | 'P' | 'X' | '^' | '_') => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    chars.next_if_eq(&'\\');
                    break;
                }
            }
        }
        // A two-character escape (`ESC c`, `ESC 7`, …): the one character is gone already.
        _ => {}
    }
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
