//! The one redactor every plugin-supplied string passes: each secret a call carried, and its
//! common encodings, become `****`.

use aho_corasick::{AhoCorasick, MatchKind};
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
                .build(&forms)
                .expect("secret patterns are few and small")
        });
        Redactor {
            secrets: plain.len(),
            matcher,
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let Some(m) = &self.matcher else {
            return text.to_owned();
        };
        let mut out = String::with_capacity(text.len());
        m.replace_all_with(text, &mut out, |_, _, dst| {
            dst.push_str(MASK);
            true
        });
        out
    }

    /// Redacts `text` in place, without copying when there is nothing to hide.
    pub fn redact_owned(&self, text: String) -> String {
        match &self.matcher {
            Some(m) if m.is_match(&text) => self.redact(&text),
            _ => text,
        }
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

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
