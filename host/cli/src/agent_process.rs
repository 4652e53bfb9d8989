//! How the `stratus agent` process is set up before it runs: one malloc arena and a tokio
//! runtime on a single thread. A machine runs as many agents as it has servers, so every
//! thread and arena an agent keeps costs a thousand times over (BENCHMARKS.md, "Lean agents").

use std::time::Duration;

/// Most threads the agent starts for blocking work (file I/O, cgroup removal, a compile the
/// code cache missed); every other task shares the one runtime thread. Sixteen matches the
/// hook calls an agent runs at once (`RuntimeConfig::max_concurrent_calls`).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// How long an idle blocking thread waits for more work before it exits (tokio's default is
/// 10 s); each one that lingers keeps its stack resident. Longer than the default metrics (5 s)
/// and health-check (10 s) intervals, whose work goes to a blocking thread: an idle agent keeps
/// one thread rather than starting a new one every few seconds.
pub const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(11);

/// glibc malloc arenas the agent may use. glibc gives each thread that allocates its own arena
/// (up to 8 per core), and each keeps freed memory resident; an agent's threads mostly wait,
/// so sharing one arena costs nothing measurable.
pub const MALLOC_ARENAS: i32 = 1;

/// Allocations from this size up are mapped on their own and returned whole when freed. Fixed,
/// because glibc otherwise raises the threshold to the largest block freed so far (a plugin's
/// compiled code, a package file), after which such blocks stay in the heap.
pub const MALLOC_MMAP_THRESHOLD: i32 = 128 << 10;

/// Tunes glibc's allocator for a process that mostly waits. Called first, before any thread
/// starts, since arenas are made as threads first allocate.
pub fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    {
        use nix::libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, mallopt};
        // SAFETY: mallopt only sets allocator parameters, before any other thread exists.
        unsafe {
            mallopt(M_ARENA_MAX, MALLOC_ARENAS);
            mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        }
    }
}

/// The name `ps` and `top` show for an agent. The provider starts agents from a descriptor
/// (`/proc/self/fd/N`), which the kernel would otherwise name them after (`N`).
pub const PROCESS_NAME: &std::ffi::CStr = c"stratus-agent";

/// Names the agent's process [`PROCESS_NAME`]; threads started later name themselves.
pub fn name_process() {
    let _ = nix::sys::prctl::set_name(PROCESS_NAME);
}

/// The agent's tokio runtime: every task on the calling thread, blocking work on at most
/// [`MAX_BLOCKING_THREADS`]. Plugin code yields every epoch tick (10 ms), so a busy hook
/// does not stop the others or the connection to the control plane.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
}
