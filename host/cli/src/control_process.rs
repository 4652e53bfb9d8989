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

/// Blocks from this size up are mapped on their own and unmapped when freed. glibc otherwise
/// raises the threshold as large blocks are freed, and a launch's package and TLS buffers then
/// stay in the heap; the agents use the same value.
pub const MALLOC_MMAP_THRESHOLD: i32 = 128 * 1024;

/// Tunes glibc's allocator; called first, before any thread starts.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = i32::try_from(cores * MALLOC_ARENAS_PER_CORE).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets allocator parameters, before any other thread exists.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        }
    }
}

/// How often the control plane hands memory malloc holds free back to the kernel.
pub const RELEASE_PERIOD: Duration = Duration::from_secs(1);

/// Free memory malloc may keep before it is handed back: below this a release is not worth
/// its walk over the free lists.
pub const RELEASE_ABOVE_BYTES: usize = 4 << 20;

/// Starts a thread that gives freed heap pages back to the kernel every [`RELEASE_PERIOD`].
/// glibc returns only the top of a heap by itself; a launch's thousands of short-lived
/// buffers leave holes below it, which kept about 27 MiB of a 1,000-server control plane
/// resident while unused (BENCHMARKS.md, "A thousand servers, fourth round").
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        let spawned = std::thread::Builder::new()
            .name("stratus-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(RELEASE_PERIOD);
                    release_if_worth_it();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("freed memory will not be released early: {e}");
        }
    }
}

#[cfg(target_env = "gnu")]
fn release_if_worth_it() {
    // SAFETY: both only walk and lock the allocator's own arenas; no pointer is passed.
    unsafe {
        if nix::libc::mallinfo2().fordblks > RELEASE_ABOVE_BYTES {
            nix::libc::malloc_trim(0);
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
