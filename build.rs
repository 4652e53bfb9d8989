//! Link options of the agent-only binary, `stratus-agent`: a process of it runs beside every
//! server, so what each one maps and writes at start is paid a thousand times.

use std::path::Path;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/stratus-agent.order");
    println!("cargo::rerun-if-changed={}", order.display());
    // The list's digest in the crate's environment: a new list must relink the agent, and a
    // build script whose output did not change would not.
    let list = std::fs::read(&order).unwrap_or_default();
    println!(
        "cargo::rustc-env=STRATUS_AGENT_ORDER_DIGEST={:016x}",
        fnv1a(&list)
    );
    // Relative relocations packed (DT_RELR, glibc 2.36): the loader reads 10 KB instead of a
    // megabyte of relocation records. The agent runs where it was built (the SSH provider
    // copies `stratus`, which keeps the usual format for older hosts).
    println!("cargo::rustc-link-arg-bin=stratus-agent=-Wl,-z,pack-relative-relocs");
    // The functions agents run, laid out together (scripts/agent-symbol-order.py makes the
    // list): the kernel maps code around every page touched, so scattered they made 11 MiB of
    // each agent's resident memory. Names are those of release builds; lld passes over names
    // the binary no longer has, so a stale list costs memory, not correctness.
    if std::env::var("PROFILE").as_deref() == Ok("release") {
        println!(
            "cargo::rustc-link-arg-bin=stratus-agent=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            order.display()
        );
    }
}

/// A 64-bit FNV-1a digest: enough to tell one list from the next.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
