//! The one wasmtime `Engine`: epoch interruption driven by a 10 ms ticker, a pooling
//! allocator sized from the number of concurrent hook calls, and a 1 MiB wasm stack.

use crate::capabilities::MAX_MEMORY_MB;
use crate::function_cache::FunctionCache;
use crate::memory_layout::KEPT_RESIDENT_BYTES;
use std::sync::Arc;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Which allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// How a pool slot's memories and tables are put back to their initial contents after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotReset {
    /// Find the pages the guest wrote with the `PAGEMAP_SCAN` ioctl (Linux 6.7+; elsewhere it
    /// falls back to `Madvise`) and copy only those back: no `madvise`, no cross-core TLB
    /// shootdown, no page faults on the next call, a warm call 0.55–0.73× the time. **Not
    /// used**, because it does not isolate calls: a written page that is swapped out is not
    /// "present", so it is neither copied back nor released and the next instance in the slot
    /// reads it; and pages it keeps mapped load faster than the others, so the next call can
    /// tell by timing which pages the previous one touched (`attack_tests.rs`). Kept for the
    /// bench that compares both.
    PagemapScan,
    /// `memset` the first kept-resident bytes and `madvise` away the rest: the next call sees
    /// exactly the module's initial image, swapped pages included.
    Madvise,
}

/// The slot reset every runtime uses (see [`SlotReset`] for why not the faster one).
pub const DEFAULT_SLOT_RESET: SlotReset = SlotReset::Madvise;

fn base_config(functions: Option<&Arc<FunctionCache>>) -> Result<Config, wasmtime::Error> {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.max_wasm_stack(1 << 20);
    if let Some(f) = functions {
        c.enable_incremental_compilation(f.clone())?;
    }
    Ok(c)
}

fn pooling(max_concurrent_calls: u32, reset: SlotReset) -> PoolingAllocationConfig {
    let n = max_concurrent_calls.max(1);
    let mut p = PoolingAllocationConfig::new();
    // Rust components carry a main module plus the WASI adapter and shims; interpreters
    // (componentize-py) need more than 8 core instances per component.
    p.total_component_instances(n)
        .total_core_instances(32 * n)
        .max_core_instances_per_component(64)
        .total_memories(2 * n)
        .max_memories_per_component(4)
        .total_tables(32 * n)
        .max_tables_per_component(32)
        .total_stacks(n)
        .max_memory_size((MAX_MEMORY_MB << 20) as usize);
    // Only a little stays resident: memset-resetting 1 MiB per freed slot made a warm hook call
    // ~20 % slower than madvise. 128 KiB holds all of a Rust plugin linked with a 64 KiB stack,
    // so its calls fault no page back in (BENCHMARKS.md, "kept resident").
    p.linear_memory_keep_resident(KEPT_RESIDENT_BYTES)
        .table_keep_resident(64 << 10);
    if reset == SlotReset::PagemapScan {
        p.pagemap_scan(Enabled::Auto);
    }
    p
}

/// Builds the engine, falling back to on-demand allocation when the pool cannot be mapped
/// (address-space limits, 39-bit VA machines).
///
/// With `functions`, compiles reuse the functions compiled before (`function_cache.rs`).
pub fn build(
    max_concurrent_calls: u32,
    reset: SlotReset,
    functions: Option<&Arc<FunctionCache>>,
) -> Result<(Engine, Allocator), wasmtime::Error> {
    let mut c = base_config(functions)?;
    // Reserve only what the largest memory cap needs so the pool costs a few GiB of address
    // space rather than 4 GiB per memory slot.
    c.memory_reservation(MAX_MEMORY_MB << 20);
    c.memory_guard_size(64 << 10);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
        max_concurrent_calls,
        reset,
    )));
    match Engine::new(&c) {
        Ok(engine) => {
            tracing::debug!(max_concurrent_calls, "plugin engine: pooling allocator");
            Ok((engine, Allocator::Pooling))
        }
        Err(err) => {
            tracing::warn!(error = %err, "plugin engine: pooling allocator unavailable, using on-demand allocation");
            Ok((Engine::new(&base_config(functions)?)?, Allocator::OnDemand))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Instance, Module, Store};

    /// A core module whose exports each return what a previous instance would have changed,
    /// then change it: `mem` returns the word at 200 (a data segment, 5) plus the words at
    /// 96 KiB (kept resident, past the data, 0) and 128 KiB (the first past the 128 KiB kept
    /// resident, 0) and writes 1234 to all three; `glob` returns the
    /// mutable global (7) and sets it to 99; `tab` returns whether table slot 1 is null (1)
    /// and fills it.
    const LEFTOVERS: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
        0x03, 0x04, 0x03, 0x00, 0x00, 0x00, // three functions of that type
        0x04, 0x04, 0x01, 0x70, 0x00, 0x02, // table: funcref, min 2
        0x05, 0x03, 0x01, 0x00, 0x04, // memory: min 4 pages
        0x06, 0x06, 0x01, 0x7f, 0x01, 0x41, 0x07, 0x0b, // global: mut i32 = 7
        0x07, 0x14, 0x03, // exports
        0x03, b'm', b'e', b'm', 0x00, 0x00, //
        0x04, b'g', b'l', b'o', b'b', 0x00, 0x01, //
        0x03, b't', b'a', b'b', 0x00, 0x02, //
        0x09, 0x07, 0x01, 0x00, 0x41, 0x00, 0x0b, 0x01, 0x00, // elem: table[0] = mem
        0x0a, 0x4f, 0x03, // code
        0x35, 0x00, // mem
        0x41, 0x00, 0x28, 0x02, 0xc8, 0x01, // i32.load [200]
        0x41, 0x00, 0x28, 0x02, 0x80, 0x80, 0x06, // i32.load [96 KiB]
        0x6a, // i32.add
        0x41, 0x00, 0x28, 0x02, 0x80, 0x80, 0x08, // i32.load [128 KiB]
        0x6a, // i32.add (the old values)
        0x41, 0x00, 0x41, 0xd2, 0x09, 0x36, 0x02, 0xc8, 0x01, // i32.store [200] 1234
        0x41, 0x00, 0x41, 0xd2, 0x09, 0x36, 0x02, 0x80, 0x80, 0x06, // [96 KiB] 1234
        0x41, 0x00, 0x41, 0xd2, 0x09, 0x36, 0x02, 0x80, 0x80, 0x08, // [128 KiB] 1234
        0x0b, // end
        0x09, 0x00, 0x23, 0x00, 0x41, 0xe3, 0x00, 0x24, 0x00, 0x0b, // glob
        0x0d, 0x00, 0x41, 0x01, 0x25, 0x00, 0xd1, // tab: ref.is_null(table[1])
        0x41, 0x01, 0xd2, 0x00, 0x26, 0x00, 0x0b, // table[1] = mem
        0x0b, 0x0b, 0x01, 0x00, 0x41, 0xc8, 0x01, 0x0b, 0x04, 0x05, 0x00, 0x00, 0x00, // data
    ];

    fn fresh_values(engine: &Engine, module: &Module) -> [i32; 3] {
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(1);
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let mut call = |name: &str| {
            let f = instance
                .get_typed_func::<(), i32>(&mut store, name)
                .unwrap();
            f.call(&mut store, ()).unwrap()
        };
        [call("mem"), call("glob"), call("tab")]
    }

    /// Each call reuses a pool slot another call wrote to; whichever way the slot is reset,
    /// the next instance must see the module's initial memory, globals and tables.
    #[test]
    fn a_reused_pool_slot_shows_nothing_of_the_previous_instance() {
        for reset in [SlotReset::PagemapScan, SlotReset::Madvise] {
            let (engine, allocator) = build(1, reset, None).unwrap();
            assert_eq!(allocator, Allocator::Pooling, "{reset:?}");
            let module = Module::new(&engine, LEFTOVERS).unwrap();
            for round in 0..5 {
                assert_eq!(
                    fresh_values(&engine, &module),
                    [5, 7, 1],
                    "{reset:?}, instance {round}"
                );
            }
        }
    }
}
