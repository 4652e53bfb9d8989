//! How much linear memory a component starts with, against what the pool keeps resident
//! between calls: a call touches the top of its stack, its data and the start of its heap,
//! and every such page past [`KEPT_RESIDENT_BYTES`] is released after the call and faulted
//! back in by the next one (a third of a trivial call for a Rust plugin linked with the
//! default 1 MiB stack).

use wasmparser::{Parser, Payload};

/// Bytes at the start of each linear memory that a freed pool slot resets in place
/// (`memset` and a copy of the initial image) instead of releasing with `madvise`. Covers the
/// initial memory of a Rust plugin linked with a 64 KiB stack (`plugins/.cargo/config.toml`);
/// resetting more costs every call, including those of plugins that never touch it.
pub const KEPT_RESIDENT_BYTES: usize = 128 << 10;

/// The size of one WebAssembly page.
const WASM_PAGE: u64 = 64 << 10;

/// The largest initial size, in bytes, of a memory defined by one of the component's core
/// modules, or `None` when none defines one (or the bytes do not parse that far).
pub fn initial_memory_bytes(bytes: &[u8]) -> Option<u64> {
    Parser::new(0)
        .parse_all(bytes)
        .map_while(Result::ok)
        .filter_map(|payload| match payload {
            Payload::MemorySection(memories) => Some(memories),
            _ => None,
        })
        .flat_map(|memories| memories.into_iter().flatten())
        .map(|memory| memory.initial.saturating_mul(WASM_PAGE))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Rust plugin this repository builds, in each of the worlds.
    const RUST_PACKAGES: &[&str] = &[
        "hello",
        "hello-proxy",
        "app",
        "haproxy",
        "mariadb",
        "motd",
        "puppet",
        "ansible",
        "chef",
        "hostile",
        "cm-probe",
        "threshold-scaler",
        "ec2-driver",
    ];

    #[test]
    fn every_rust_plugin_starts_within_the_memory_kept_resident() {
        for name in RUST_PACKAGES {
            let dir = stratus_plugin_artifacts::package_dir(name);
            let bytes = std::fs::read(dir.join("plugin.wasm")).unwrap();
            let initial = initial_memory_bytes(&bytes).expect("a Rust plugin defines a memory");
            assert!(
                initial <= KEPT_RESIDENT_BYTES as u64,
                "{name} starts with {initial} bytes of memory, more than the {KEPT_RESIDENT_BYTES} \
                 kept resident: was it linked with the 64 KiB stack of plugins/.cargo/config.toml?"
            );
        }
    }

    #[test]
    fn the_initial_size_is_read_from_the_memory_section() {
        // A core module with one memory of 17 pages (a Rust module's with the 1 MiB stack).
        let module = [
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
            0x05, 0x03, 0x01, 0x00, 0x11, // memory: min 17 pages
        ];
        assert_eq!(initial_memory_bytes(&module), Some(17 * WASM_PAGE));
        let no_memory = &module[..8];
        assert_eq!(initial_memory_bytes(no_memory), None);
        assert_eq!(initial_memory_bytes(b"not wasm"), None);
    }
}
