use super::*;

/// Has characters that base64 turns into `+` and `/` and URL-encoding escapes.
const SECRET: &str = "s3cr3t>>??~/p@ss w:rd";

fn redactor() -> Redactor {
    Redactor::new([SECRET.to_string()])
}

#[test]
fn redacts_every_occurrence_longest_first() {
    let r = Redactor::new(["pw".to_string(), "pw-long".to_string(), String::new()]);
    assert_eq!(r.redact("a pw-long b pw c"), "a **** b **** c");
    assert_eq!(r.redact("nothing here"), "nothing here");
}

#[test]
fn debug_does_not_show_secrets() {
    let r = Redactor::new(["s3cret".to_string()]);
    assert_eq!(format!("{r:?}"), "Redactor(1 secrets)");
}

#[test]
fn empty_secret_is_ignored() {
    let r = Redactor::new([String::new()]);
    assert_eq!(r.redact("abc"), "abc");
    assert_eq!(Redactor::default().redact("abc"), "abc");
}

#[test]
fn lossy_bytes_are_redacted() {
    let r = Redactor::new(["s3cret".to_string()]);
    assert_eq!(r.redact_bytes(b"pw=s3cret\xff"), "pw=****\u{fffd}");
}

#[test]
fn hex_in_either_case_is_redacted() {
    let r = redactor();
    for form in [hex::encode(SECRET), hex::encode_upper(SECRET)] {
        assert_eq!(r.redact(&format!("x={form};")), "x=****;", "{form}");
    }
}

#[test]
fn percent_encodings_are_redacted() {
    let r = redactor();
    let every: String = SECRET.bytes().map(|b| format!("%{b:02X}")).collect();
    let component = utf8_percent_encode(SECRET, COMPONENT).to_string();
    let alnum = utf8_percent_encode(SECRET, NON_ALPHANUMERIC).to_string();
    assert!(
        component.contains("%40") && alnum.contains("%7E"),
        "{component} {alnum}"
    );
    for form in [
        every.clone(),
        every.to_lowercase(),
        component.clone(),
        lower_escapes(&component),
        alnum.clone(),
        lower_escapes(&alnum),
        component.replace("%20", "+"),
    ] {
        assert_eq!(
            r.redact(&format!("?pw={form}&x=1")),
            "?pw=****&x=1",
            "{form}"
        );
    }
}

#[test]
fn whole_base64_forms_are_redacted() {
    let r = redactor();
    for form in [
        STANDARD.encode(SECRET),
        STANDARD_NO_PAD.encode(SECRET),
        URL_SAFE.encode(SECRET),
        URL_SAFE_NO_PAD.encode(SECRET),
    ] {
        assert_eq!(
            r.redact(&format!("token {form} end")),
            "token **** end",
            "{form}"
        );
    }
    assert_ne!(
        STANDARD.encode(SECRET),
        URL_SAFE.encode(SECRET),
        "the alphabets differ here"
    );
}

/// A secret inside a longer base64 string is encoded differently at each byte offset: every
/// character that depends on the secret alone must be masked, whatever surrounds it.
#[test]
fn a_secret_embedded_in_base64_is_masked_at_every_offset() {
    let r = redactor();
    let n = SECRET.len();
    for engine in [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for before in 0..6 {
            for after in 0..4 {
                let mut data = b"PREFIX"[..before].to_vec();
                data.extend_from_slice(SECRET.as_bytes());
                data.extend_from_slice(&b"SUF"[..after]);
                let encoded = engine.encode(&data);
                let got = r.redact(&encoded);
                let (left, right) = got
                    .split_once(MASK)
                    .unwrap_or_else(|| panic!("offset {before}: {encoded} unmasked"));
                assert!(
                    encoded.starts_with(left) && encoded.ends_with(right),
                    "{got}"
                );
                // Characters [first, last) carry only secret bits; all of them are gone.
                let first = (8 * before).div_ceil(6);
                let last = 8 * (before + n) / 6;
                assert!(left.len() <= first, "offset {before}: {got}");
                assert!(
                    encoded.len() - right.len() >= last,
                    "offset {before}: {got}"
                );
            }
        }
    }
}

#[test]
fn short_secrets_mask_only_their_plain_form() {
    // The hex of "ab" is "6162": masking every "6162" in a log would hide innocent text.
    let r = Redactor::new(["ab".to_string()]);
    assert_eq!(r.redact("ab 6162 YWI="), "**** 6162 YWI=");
}

#[test]
fn several_secrets_are_all_masked() {
    let r = Redactor::new(["first-secret".to_string(), "second-secret".to_string()]);
    let text = format!("{} and {}", hex::encode("second-secret"), "first-secret");
    assert_eq!(r.redact(&text), "**** and ****");
}

#[test]
fn mixed_case_and_reversed_forms_are_masked() {
    let r = Redactor::new(["Sup3rSecretPw".to_string()]);
    assert_eq!(r.redact("a SUP3RSECRETPW b"), "a **** b");
    assert_eq!(r.redact("wPterceSr3puS"), "****");
    // Percent-encoding with the case of the hex digits alternating per byte.
    let mixed: String = "Sup3rSecretPw"
        .bytes()
        .enumerate()
        .map(|(i, b)| match i % 2 {
            0 => format!("%{b:02x}"),
            _ => format!("%{b:02X}"),
        })
        .collect();
    assert_eq!(r.redact(&mixed), "****");
    assert_eq!(
        r.redact(&hex::encode("Sup3rSecretPw").to_uppercase()),
        "****"
    );
}

#[test]
fn invisible_characters_and_escape_sequences_cannot_split_a_secret() {
    let r = Redactor::new(["Sup3rSecretPw".to_string()]);
    for hidden in [
        "\u{200b}",
        "\u{1b}[0m",
        "\u{1b}]0;title\u{7}",
        "\u{ad}",
        "\u{feff}",
        "\r",
        // Found by a review: variation selector, grapheme joiner, tag, Mongolian vowel
        // separator, Arabic letter mark, Hangul filler.
        "\u{fe0f}",
        "\u{34f}",
        "\u{e0020}",
        "\u{180e}",
        "\u{61c}",
        "\u{3164}",
    ] {
        let text = format!("pw=Sup3r{hidden}SecretPw!");
        assert_eq!(r.redact(&text), "pw=****!", "{hidden:?}");
    }
}

#[test]
fn control_characters_are_dropped_but_lines_and_tabs_stay() {
    let r = Redactor::default();
    assert_eq!(
        r.redact("a\u{1b}[2K\u{1b}[1A\tb\nc\u{7}\u{0}d\u{1b}]2;owned\u{1b}\\e"),
        "a\tb\ncde"
    );
    assert_eq!(r.redact("plain text"), "plain text");
}

#[test]
fn unicode_line_separators_become_newlines_so_no_viewer_sees_a_hidden_line() {
    let r = Redactor::new(["s3cret".to_string()]);
    assert_eq!(
        r.redact("a\u{2028}forged line\u{2029}b s3cret"),
        "a\nforged line\nb ****"
    );
}
