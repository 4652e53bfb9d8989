//! Two kinds of test must not overlap: those that measure CPU (a burning greeter must show as
//! a busy core, or breach a scaling rule) and those that keep both cores busy for minutes
//! compiling interpreters (the Python and JavaScript plugins, and the Rust skeletons' cargo
//! builds). The first take this lock alone, the second shared; every other test takes no part,
//! being light enough that a burner still gets most of a core beside it. Waiting measurers
//! hold off new compilers, so a measurement waits for at most the compiles already running.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static CORES: RwLock<()> = RwLock::new(());

/// Held by a test while it measures CPU.
pub fn measuring() -> RwLockWriteGuard<'static, ()> {
    CORES.write().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test while it compiles interpreters or runs cargo.
pub fn compiling() -> RwLockReadGuard<'static, ()> {
    CORES.read().unwrap_or_else(|e| e.into_inner())
}
