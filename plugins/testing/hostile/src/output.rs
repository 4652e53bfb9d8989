//! Attacks through what the plugin returns: secrets, sizes, floods (`out-*`).
//!
//! - `out-secret-plain`: every password the context carries, as is, in every channel (logs
//!   at each level, status, stdout, stderr, the hook error).
//! - `out-secret-encoded`: the same passwords as hex, percent-encoding and base64 (standard
//!   and URL-safe, embedded at each byte offset of a longer blob), and disguised (case,
//!   reversal, mixed-case escapes, split by invisible characters).
//! - `out-secret-file-name`: a file in the service directory named after each password.
//! - `out-huge-error`: a 20 MiB status, log record and hook error.
//! - `out-log-flood`: 1,000,000 `host.log` calls, then success.
//! - `out-forge-log`: a log record, stdout and an error that try to forge the hook log's
//!   header lines and carry terminal escape sequences.
//!
//! `health_check` with the setting `health = "leak"` puts the passwords in its message.

use stratus_plugin_sdk::service::*;

/// Bigger than the 16 MiB frame limit of the control-plane protocol.
const HUGE: usize = 20 << 20;
const FLOOD: usize = 1_000_000;

pub(crate) fn attack(ctx: &ServiceContext, name: &str) -> Result<(), HookError> {
    match name {
        "out-secret-plain" => leak(&passwords(ctx)),
        "out-secret-encoded" => leak(&encoded(&passwords(ctx))),
        "out-secret-file-name" => {
            for pw in passwords(ctx) {
                let path = files::service_path(ctx, &pw);
                files::write(&path, "named after a secret")?;
            }
            Ok(())
        }
        "out-huge-error" => {
            let huge = "E".repeat(HUGE);
            host::set_status(&huge);
            log::error(&huge);
            Err(HookError::fatal(huge))
        }
        "out-forge-log" => {
            // Lines that would read as the hook log's own headers, and a terminal escape.
            log::info("configured\n# outcome: Done\n[info] all good");
            println!("# outcome: Done\n\u{1b}]0;owned\u{7}\u{1b}[2Kfine");
            Err(HookError::fatal("failed\n# outcome: Done"))
        }
        "out-log-flood" => {
            for i in 0..FLOOD {
                log::info(&format!("hostile flood record {i}"));
            }
            Ok(())
        }
        other => Err(HookError::fatal(format!("unknown attack `{other}`"))),
    }
}

/// The health message the `health` setting asks for.
pub(crate) fn health_message(ctx: &ServiceContext) -> String {
    match setting(ctx, "health") {
        Some("leak") => format!("fine; passwords: {}", passwords(ctx).join(", ")),
        _ => "hostile is fine".into(),
    }
}

/// Every password in the context: the service's own credentials and its dependencies'.
fn passwords(ctx: &ServiceContext) -> Vec<String> {
    let own = ctx.credentials.iter();
    let deps = ctx.dependencies.iter().flat_map(|d| d.credentials.iter());
    own.chain(deps).map(|c| c.password.clone()).collect()
}

/// Says each text through every channel a plugin has, then fails with all of them.
fn leak(texts: &[String]) -> Result<(), HookError> {
    for t in texts {
        log::trace(&format!("trace {t}"));
        log::debug(&format!("debug {t}"));
        log::info(&format!("info {t}"));
        log::warn(&format!("warn {t}"));
        log::error(&format!("error {t}"));
        host::set_status(&format!("status {t}"));
        println!("stdout {t}");
        eprintln!("stderr {t}");
    }
    Err(HookError::fatal(format!("leaking: {}", texts.join(" | "))))
}

/// Each secret as hex (both cases), percent-encoded (both cases) and base64 (both alphabets,
/// padded and not, alone and inside a longer blob at byte offsets 0, 1 and 2).
fn encoded(secrets: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in secrets {
        let b = s.as_bytes();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        out.push(hex.to_uppercase());
        out.push(hex);
        let pct: String = b.iter().map(|x| format!("%{x:02X}")).collect();
        out.push(pct.to_lowercase());
        out.push(pct);
        out.extend(disguised(s));
        for url_safe in [false, true] {
            out.push(base64(b, url_safe, true));
            out.push(base64(b, url_safe, false));
            for offset in 0..3 {
                let mut blob = b"xyz"[..offset].to_vec();
                blob.extend_from_slice(b);
                blob.extend_from_slice(b"tail");
                out.push(base64(&blob, url_safe, false));
            }
        }
    }
    out
}

/// Each secret in letter case changed, reversed, percent-encoded with the case of its hex
/// digits alternating, and split by a zero-width space and by a terminal escape sequence:
/// shown to a person, each still reads as the secret.
pub(crate) fn disguised(s: &str) -> Vec<String> {
    let mixed: String = s
        .bytes()
        .enumerate()
        .map(|(i, b)| match i % 2 {
            0 => format!("%{b:02x}"),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (head, tail) = s.split_at(s.len() / 2);
    vec![
        s.to_uppercase(),
        s.chars().rev().collect(),
        mixed,
        format!("{head}\u{200b}{tail}"),
        format!("{head}\u{1b}[0m{tail}"),
    ]
}

/// RFC 4648 base64, written out so this test plugin needs no extra crate.
fn base64(bytes: &[u8], url_safe: bool, pad: bool) -> String {
    let mut table = *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if url_safe {
        table[62] = b'-';
        table[63] = b'_';
    }
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(table[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}
