//! Per-call resource limits. Like wasmtime's `StoreLimits`, but it remembers a refused
//! memory growth so that the resulting trap (a Rust guest aborts on allocation failure) can be
//! reported as "out of memory" instead of "unreachable".

use wasmtime::ResourceLimiter;

/// Instances, tables and memories a single plugin store may create; generous for Rust,
/// Python and JS components, small enough to stop a component that multiplies them.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 8;
/// Table elements per table (function references); far above what real guests use.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    /// Linear memory of all the store's memories together: the cap is for the whole plugin,
    /// not per memory (a component has several).
    used_bytes: usize,
    /// Set when a growth was refused: the size the guest asked for.
    pub refused_growth: Option<usize>,
}

impl Limiter {
    pub fn new(memory_mb: u64) -> Limiter {
        Limiter {
            memory_bytes: (memory_mb as usize) << 20,
            used_bytes: 0,
            refused_growth: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used_bytes - current.min(self.used_bytes) + desired;
        if total > self.memory_bytes {
            self.refused_growth = Some(total);
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
