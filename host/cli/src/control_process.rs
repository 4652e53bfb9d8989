//! How the `stratus serve` process is set up before it runs: malloc arenas and the tokio
//! runtime sized for a control plane that waits on a thousand agents at once rather than
//! computes (BENCHMARKS.md, "A thousand servers").

use std::time::Duration;

/// Most threads the control plane starts for blocking work (the store's cloud files, the
/// provider's launches and ends, which bound themselves further). tokio's default, 512, let a
/// thousand agents fetching packages at once make hundreds of threads, each keeping its stack
/// and a malloc arena's worth of freed memory.
pub const MAX_BLOCKING_THREADS: usize = 64;

/// How long an idle blocking thread waits for more work before it exits (tokio's default is
/// 10 s): a launch's burst of threads is gone soon after.
pub const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// glibc malloc arenas: one per core for the runtime's workers, instead of up to eight per
/// core, each keeping freed memory resident.
pub const MALLOC_ARENAS_PER_CORE: usize = 1;

/// Tunes glibc's allocator; called first, before any thread starts.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(cores * MALLOC_ARENAS_PER_CORE).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets allocator parameters, before any other thread exists.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
        }
    }
}

/// The control plane's tokio runtime: a worker per core, blocking work on at most
/// [`MAX_BLOCKING_THREADS`].
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
}
