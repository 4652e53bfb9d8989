//! Size bounds on the strings a plugin supplies, so that no report outgrows a frame and
//! nothing the control plane stores from an agent is unbounded.

/// Longest hook error, trap message, status line, health message or CM summary kept.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest health message kept from a scheduled check: results arrive every few seconds and
/// each is stored, so they are kept to a status line.
pub const MAX_HEALTH_MESSAGE_BYTES: usize = 1024;
/// Longest single log record kept.
pub const MAX_LOG_RECORD_BYTES: usize = 16 * 1024;
/// Most log records one call keeps and writes to the agent log; the rest are only counted.
pub const MAX_LOG_RECORDS: usize = 1_000;
/// Most bytes of log records one call keeps, all records together.
pub const MAX_LOG_BYTES: usize = 1 << 20;
/// Most `produced` entries of a CM report kept.
pub const MAX_PRODUCED: usize = 1_000;
/// Longest `produced` entry or capability denial kept (a path is at most 4 KiB on Linux).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most bytes of a crashed process's output an agent reports (its last ones): enough for the
/// error that ended it, and the report of a whole agent stays far below a frame.
pub const MAX_OUTPUT_TAIL_BYTES: usize = 2048;
/// Most crashed processes one supervision report names; the rest are only counted.
pub const MAX_REPORTED_PROCESSES: usize = 64;

/// Highest CPU percentage kept from a metrics report: 100 per core, for a machine of up to
/// 4096 cores; anything above is an agent's error, not a measurement.
pub const MAX_CPU_PERCENT: f64 = 409_600.0;
/// Highest memory percentage kept from a metrics report: resident memory counted per process
/// may exceed the machine's (shared pages count once per process), but not by this much.
pub const MAX_MEMORY_PERCENT: f64 = 1_000.0;

/// Most bytes a cut marker adds: a string already cut at `n` is at most `n + MARKER_BYTES`, so a
/// second, defensive cut at that size keeps the first marker.
pub const MARKER_BYTES: usize = 64;

/// `text` cut to at most `max` bytes (at a character boundary) followed by a marker giving the
/// original size, e.g. `…(cut, 20971520 bytes)`; unchanged when it fits.
pub fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    cut_str(&text, max)
}

/// Like [`cut`] for a borrowed string (copies only what is kept).
pub fn cut_str(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(cut, {} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged() {
        assert_eq!(cut("abc".into(), 3), "abc");
        assert_eq!(cut_str("", 0), "");
    }

    #[test]
    fn long_text_is_cut_with_a_marker_giving_the_original_size() {
        let big = "x".repeat(20 << 20);
        let got = cut(big, MAX_MESSAGE_BYTES);
        assert_eq!(
            got,
            format!("{}…(cut, 20971520 bytes)", "x".repeat(MAX_MESSAGE_BYTES))
        );
    }

    #[test]
    fn cut_respects_character_boundaries() {
        // "é" is two bytes: cutting at 3 would split the second one.
        assert_eq!(cut_str("éé!", 3), "é…(cut, 5 bytes)");
    }

    #[test]
    fn a_second_cut_with_marker_room_keeps_the_first_marker() {
        let once = cut("y".repeat(1000), 10);
        assert!(once.len() <= 10 + MARKER_BYTES);
        assert_eq!(cut(once.clone(), 10 + MARKER_BYTES), once);
    }
}
