//! How many servers the local provider holds at most (`max-servers`): by default what the
//! machine's memory and the loopback range it leases from allow, or the operator's setting.

use crate::ProviderError;
use std::path::{Path, PathBuf};

/// Memory the default capacity gives each server: an agent's resident size measured 15.7–18.2
/// MiB before its code was laid out together and 9.3 MiB after, of which 1.6 MiB are its own
/// (BENCHMARKS.md); the rest of the 16 MiB is left for the programs its hooks start.
pub const AGENT_MEMORY: u64 = 16 * 1024 * 1024;

/// Addresses the provider leases from: 127.X.Y.Z with X in 1..=254, Y in 0..=255 and Z in
/// 1..=254 (see `leases.rs`).
pub const ADDRESS_RANGE: u64 = 254 * 256 * 254;

/// The operator's setting, relative to the state directory: one whole number.
pub const SETTING_FILE: &str = "provider/max-servers";

/// How many servers a provider can hold, and how many it holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub max: u64,
    pub used: u64,
}

impl Capacity {
    /// Servers that can still start.
    pub fn left(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// `max-servers` of the state directory: the setting when present, else the default; never
/// more than the addresses there are to lease.
pub(crate) fn max_servers(state_dir: &Path) -> Result<u64, ProviderError> {
    let path = state_dir.join(SETTING_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_setting(&path, &text).map(|n| n.min(ADDRESS_RANGE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(default_max(mem_total())),
        Err(e) => Err(ProviderError::io(format!("reading {}", path.display()))(e)),
    }
}

fn parse_setting(path: &Path, text: &str) -> Result<u64, ProviderError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| ProviderError::Setting {
            path: PathBuf::from(path),
            message: format!(
                "expected a whole number of servers (max-servers), found {:?}",
                text.trim().chars().take(40).collect::<String>()
            ),
        })
}

/// One agent per [`AGENT_MEMORY`] of `memory` bytes, and never more than the address range.
fn default_max(memory: Option<u64>) -> u64 {
    memory
        .map(|m| m / AGENT_MEMORY)
        .unwrap_or(ADDRESS_RANGE)
        .min(ADDRESS_RANGE)
}

/// `MemTotal` of `/proc/meminfo` in bytes; `None` where it cannot be read.
fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `2400` as `2,400`, for messages people read.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_memory_over_agent_size_bounded_by_the_address_range() {
        assert_eq!(default_max(Some(24 * 1024 * AGENT_MEMORY / 16)), 1536);
        assert_eq!(default_max(Some(u64::MAX)), ADDRESS_RANGE);
        assert_eq!(default_max(None), ADDRESS_RANGE);
        assert!(default_max(mem_total()) > 0);
    }

    #[test]
    fn the_setting_is_a_whole_number() {
        let p = Path::new("/s/provider/max-servers");
        assert_eq!(parse_setting(p, "3\n").unwrap(), 3);
        let e = parse_setting(p, "lots").unwrap_err().to_string();
        assert!(
            e.contains("/s/provider/max-servers") && e.contains("\"lots\""),
            "{e}"
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(2400), "2,400");
        assert_eq!(thousands(100_000_000), "100,000,000");
    }
}
