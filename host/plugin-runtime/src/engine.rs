//! The one wasmtime `Engine`: epoch interruption driven by a 10 ms ticker, a pooling
//! allocator sized from the number of concurrent hook calls, and a 1 MiB wasm stack.

use crate::capabilities::MAX_MEMORY_MB;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Which allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.max_wasm_stack(1 << 20);
    c
}

fn pooling(max_concurrent_calls: u32) -> PoolingAllocationConfig {
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
    // ~20 % slower than madvise; 64 KiB was slightly faster than none (measured).
    p.linear_memory_keep_resident(64 << 10)
        .table_keep_resident(64 << 10);
    p
}

/// Builds the engine, falling back to on-demand allocation when the pool cannot be mapped
/// (address-space limits, 39-bit VA machines).
pub fn build(max_concurrent_calls: u32) -> Result<(Engine, Allocator), wasmtime::Error> {
    let mut c = base_config();
    // Reserve only what the largest memory cap needs so the pool costs a few GiB of address
    // space rather than 4 GiB per memory slot.
    c.memory_reservation(MAX_MEMORY_MB << 20);
    c.memory_guard_size(64 << 10);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(
        max_concurrent_calls,
    )));
    match Engine::new(&c) {
        Ok(engine) => {
            tracing::debug!(max_concurrent_calls, "plugin engine: pooling allocator");
            Ok((engine, Allocator::Pooling))
        }
        Err(err) => {
            tracing::warn!(error = %err, "plugin engine: pooling allocator unavailable, using on-demand allocation");
            Ok((Engine::new(&base_config())?, Allocator::OnDemand))
        }
    }
}
