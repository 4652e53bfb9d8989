//! Compiled functions kept between compiles (Cranelift's incremental compilation cache, one
//! entry per function): a component that shares functions with one compiled before compiles
//! only the rest. Every Python plugin carries the same CPython and every JavaScript plugin the
//! same engine, so the second such plugin (or the next build of the one being written) costs a
//! fraction of the first.
//!
//! Entries are machine code that ends up in the components compiled from them, so, like the
//! code cache (`cache.rs`), each carries an HMAC made with the code cache's key; an entry that
//! does not verify is removed and its function compiled again. Each key has its own directory,
//! so runtimes with different keys never discard each other's entries.
//!
//! Anyone who gets a component compiled decides how many functions it has, so the cache is
//! bounded on disk, not by file sizes: [`MAX_FUNCTION_CACHE_BYTES`] of blocks, which also bounds
//! the number of files. A compile stops storing at the limit, and when a compile ends (failed
//! or not) with the directory near it, the entries used longest ago go first.
//!
//! Only components of [`MIN_COMPONENT_BYTES`] or more use it, and only functions of
//! [`MIN_ENTRY_BYTES`] or more are kept: a small component compiles in well under a second, a
//! small function in microseconds, and a file for each cost more than it saved (every test
//! compiling our Rust plugins wrote hundreds of files for nothing).

use crate::cache::HmacSha256;
use hmac::Mac;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The most disk the function cache of one key takes (blocks, not file sizes). One
/// interpreter's functions take about 100 MB of it (componentize-py's CPython,
/// componentize-js's engine), so this holds about ten.
pub const MAX_FUNCTION_CACHE_BYTES: u64 = 1 << 30;

/// Smallest component whose compile uses the cache: above every Rust plugin shipped (under
/// 1 MB), below every interpreter (12 MB and up).
pub const MIN_COMPONENT_BYTES: u64 = 4_000_000;

/// Smallest compiled function kept: 43 % of an interpreter's functions are smaller, and they
/// compile in microseconds.
pub const MIN_ENTRY_BYTES: usize = 1024;

/// Longest entry kept: far above any one function's code; a larger one is compiled every time.
const MAX_ENTRY_BYTES: usize = 16 << 20;

/// Bytes of the HMAC tag in front of each entry.
const TAG_BYTES: usize = 32;

/// Cranelift's keys are SHA-256 hashes; nothing else is looked up or stored.
const KEY_BYTES: usize = 32;

/// What an entry is taken to occupy before the directory is next scanned: whole 4 KiB blocks.
fn on_disk(entry_bytes: usize) -> u64 {
    (entry_bytes as u64).div_ceil(4096) * 4096
}

/// `O_NOFOLLOW | O_NONBLOCK`: a planted link is not followed, a planted FIFO does not block.
const NOFOLLOW_NONBLOCK: i32 =
    rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32;

/// No entry there: nothing to refuse (a directory not made yet, or a file in its place).
fn missing(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// `used` before the directory was first scanned.
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
    /// Disk the entries take: scanned at first use, then counted up by what is stored.
    used: AtomicU64,
    /// Functions found (verified) since this cache was opened.
    hits: AtomicU64,
    /// Entries found but refused (and removed) since this cache was opened.
    refused: AtomicU64,
    /// Compiles under way that use the cache; with none, it finds and keeps nothing.
    open: AtomicU64,
    min_component_bytes: AtomicU64,
}

/// Keeps the cache in use for one compile; see [`FunctionCache::open_for`]. Dropped when the
/// compile ends, however it ends, and prunes the directory if it is near its limit.
pub(crate) struct Open<'a>(&'a FunctionCache);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        let used = self.0.used.load(Ordering::Relaxed);
        if used != UNKNOWN && used > self.0.max_bytes / 8 * 7 {
            self.0.prune();
        }
    }
}

impl FunctionCache {
    /// The cache of `key` under `parent` (in a directory of its own, named by a digest of the
    /// key).
    pub(crate) fn new(parent: PathBuf, key: [u8; 32]) -> FunctionCache {
        let mut h = Sha256::new();
        h.update(b"stratus function cache directory\0");
        h.update(key);
        let dir = parent.join(hex::encode(&h.finalize()[..8]));
        FunctionCache {
            dir,
            key,
            max_bytes: MAX_FUNCTION_CACHE_BYTES,
            used: AtomicU64::new(UNKNOWN),
            hits: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            open: AtomicU64::new(0),
            min_component_bytes: AtomicU64::new(MIN_COMPONENT_BYTES),
        }
    }

    /// Puts the cache in use while the compile of a component of `bytes` holds the result,
    /// if the component is large enough to gain from it. A small component compiled beside a
    /// large one uses it too: harmless, merely not worth arranging otherwise.
    pub(crate) fn open_for(&self, bytes: u64) -> Option<Open<'_>> {
        if bytes < self.min_component_bytes.load(Ordering::Relaxed) {
            return None;
        }
        if self.used.load(Ordering::Relaxed) == UNKNOWN {
            // Made once here, not at every store; a cache that cannot make it stores nothing.
            let _ = crate::cache::create_private_dir(&self.dir);
            self.prune();
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Open(self))
    }

    fn in_use(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    #[cfg(test)]
    pub(crate) fn set_min_component_bytes(&self, bytes: u64) {
        self.min_component_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Functions this cache gave a compile instead of compiling them.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Entries this cache refused because they did not verify.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn path(&self, key: &[u8]) -> Option<PathBuf> {
        (key.len() == KEY_BYTES).then(|| self.dir.join(hex::encode(key)))
    }

    /// The MAC binds the lookup key too, so a valid entry cannot be renamed into another's
    /// place, and is domain-separated from the code cache's MACs made with the same key.
    fn mac(&self, key: &[u8], value: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(b"stratus function cache\0");
        m.update(key);
        m.update(value);
        m
    }

    /// The verified value of the entry at `path`; `Err` names why an existing entry is refused.
    /// A link or anything but a regular file is refused without being followed or read.
    fn read_verified(&self, key: &[u8], path: &Path) -> Result<Option<Vec<u8>>, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::File::options()
            .read(true)
            .custom_flags(NOFOLLOW_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.file_type().is_file() {
            return Err("not a regular file".to_string());
        }
        let limit = (TAG_BYTES + MAX_ENTRY_BYTES) as u64;
        let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
        (&file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() < TAG_BYTES || bytes.len() as u64 > limit {
            return Err(format!("{} bytes is no entry's size", bytes.len()));
        }
        let value = bytes.split_off(TAG_BYTES);
        self.mac(key, &value)
            .verify_slice(&bytes)
            .map_err(|_| "HMAC mismatch: entry was modified".to_string())?;
        // Renewed so that pruning keeps what is still used.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(value))
    }

    /// Measures the disk the directory takes and, over three quarters of the limit, removes
    /// the entries used longest ago (by modification time, which a hit renews) until it is
    /// under.
    pub(crate) fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            self.used.store(0, Ordering::Relaxed);
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.blocks() * 512, e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, disk, _)| disk).sum();
        let keep = self.max_bytes / 4 * 3;
        if total > keep {
            entries.sort();
            let mut removed = 0usize;
            for (_, disk, path) in entries {
                if total <= keep {
                    break;
                }
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
                total = total.saturating_sub(disk);
            }
            tracing::info!(removed, dir = %self.dir.display(), "function cache pruned to its limit");
        }
        self.used.store(total, Ordering::Relaxed);
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        if !self.in_use() {
            return None;
        }
        let path = self.path(key)?;
        match self.read_verified(key, &path) {
            Ok(Some(value)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Cow::Owned(value))
            }
            Ok(None) => None,
            Err(reason) => {
                // Counted, and said once per compile (runtime.rs): a changed directory would
                // otherwise write a line per function.
                self.refused.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                tracing::debug!(%reason, entry = %path.display(), "discarded function cache entry");
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Some(path) = self.path(key).filter(|_| self.in_use()) else {
            return false;
        };
        if !(MIN_ENTRY_BYTES..=MAX_ENTRY_BYTES).contains(&value.len()) {
            return false;
        }
        let disk = on_disk(TAG_BYTES + value.len());
        let used = self.used.fetch_add(disk, Ordering::Relaxed);
        if used == UNKNOWN || used.saturating_add(disk) > self.max_bytes {
            self.used.fetch_sub(disk, Ordering::Relaxed);
            return false;
        }
        let tag = self.mac(key, &value).finalize().into_bytes();
        // Unsynced: an entry lost in a crash is a miss, and a torn one fails its HMAC.
        crate::cache::write_by_rename(&path, &[&tag, &value], false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    /// A cache in use for good (as if a large compile were always under way).
    fn cache_at(dir: &Path, secret: &str) -> FunctionCache {
        let c = FunctionCache::new(dir.to_owned(), crate::cache_key_of_secret(secret));
        std::mem::forget(c.open_for(u64::MAX));
        c
    }

    fn code(byte: u8) -> Vec<u8> {
        vec![byte; MIN_ENTRY_BYTES]
    }

    #[test]
    fn an_entry_is_found_with_its_key_and_refused_when_changed_or_moved() {
        let dir = tempfile::tempdir().unwrap();
        let mine = cache_at(dir.path(), "secret");
        let key = [7u8; 32];
        assert!(mine.get(&key).is_none());
        assert!(mine.insert(&key, code(1)));
        assert_eq!(mine.get(&key).as_deref(), Some(&code(1)[..]));
        assert!(mine.get(&[8u8; 32]).is_none(), "another key finds nothing");

        // Another secret has a directory of its own: it neither finds nor removes this one.
        let other = cache_at(dir.path(), "other");
        assert_ne!(other.dir, mine.dir);
        assert!(other.get(&key).is_none());
        assert_eq!(other.refused(), 0);
        assert!(mine.get(&key).is_some());

        // One byte changed in place fails the HMAC, and the entry is removed.
        let path = mine.path(&key).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(mine.get(&key).is_none());
        assert!(!path.exists());
        assert_eq!(mine.refused(), 1);

        // A valid entry renamed into another key's place is refused too, and so is another
        // secret's entry copied in.
        assert!(mine.insert(&key, code(2)));
        std::fs::rename(&path, mine.path(&[9u8; 32]).unwrap()).unwrap();
        assert!(mine.get(&[9u8; 32]).is_none());
        assert!(other.insert(&key, code(3)));
        std::fs::copy(other.path(&key).unwrap(), &path).unwrap();
        assert!(mine.get(&key).is_none());
        assert_eq!(mine.refused(), 3);
    }

    /// What a writer of the directory could plant is refused without hanging or following it.
    #[test]
    fn links_fifos_and_odd_sizes_are_refused_without_being_followed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_at(dir.path(), "secret");
        assert!(c.insert(&[1u8; 32], code(1)));
        let fifo = c.path(&[2u8; 32]).unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(c.get(&[2u8; 32]).is_none(), "a FIFO is no entry");
        let link = c.path(&[3u8; 32]).unwrap();
        std::os::unix::fs::symlink(c.path(&[1u8; 32]).unwrap(), &link).unwrap();
        assert!(c.get(&[3u8; 32]).is_none(), "a link is not followed");
        let short = c.path(&[4u8; 32]).unwrap();
        std::fs::write(&short, b"short").unwrap();
        assert!(c.get(&[4u8; 32]).is_none());
        assert_eq!(c.refused(), 3);
        assert!(!fifo.exists() && !short.exists());
        assert!(
            c.path(&[1u8; 32]).unwrap().exists(),
            "the link's target is untouched"
        );
    }

    #[test]
    fn odd_keys_and_small_or_oversized_entries_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_at(dir.path(), "secret");
        assert!(!c.insert(&[], code(1)));
        assert!(!c.insert(&[1u8; 31], code(1)));
        assert!(!c.insert(&[1u8; 33], code(1)));
        assert!(!c.insert(&[1u8; 32], vec![0u8; MIN_ENTRY_BYTES - 1]));
        assert!(!c.insert(&[1u8; 32], vec![0u8; MAX_ENTRY_BYTES + 1]));
        assert!(!c.dir.exists() || std::fs::read_dir(&c.dir).unwrap().count() == 0);
    }

    /// At the limit a compile stores nothing more; when it ends, the entries used longest
    /// ago are removed down to three quarters of the limit.
    #[test]
    fn the_limit_stops_storing_and_the_end_of_a_compile_prunes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = FunctionCache::new(dir.path().to_owned(), [5; 32]);
        c.max_bytes = 4 * 4096;
        let open = c.open_for(u64::MAX).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        for k in 0..4u8 {
            assert!(c.insert(&[k; 32], code(k)));
            let f = std::fs::File::options()
                .write(true)
                .open(c.path(&[k; 32]).unwrap())
                .unwrap();
            f.set_modified(old + std::time::Duration::from_secs(k as u64))
                .unwrap();
        }
        assert!(!c.insert(&[4; 32], code(4)), "stored past the limit");
        // A hit renews entry 0, so it outlives 1.
        assert!(c.get(&[0; 32]).is_some());
        drop(open);
        let left: Vec<bool> = (0..5u8)
            .map(|k| c.path(&[k; 32]).unwrap().exists())
            .collect();
        assert_eq!(left, [true, false, true, true, false]);
        assert_eq!(c.used.load(Ordering::Relaxed), 3 * 4096);
    }

    /// A runtime whose compiles all use the function cache (our Rust plugins are smaller
    /// than [`MIN_COMPONENT_BYTES`]).
    fn runtime(cache: &Path, secret: &str) -> crate::Runtime {
        let rt = crate::Runtime::new(crate::RuntimeConfig {
            cache_dir: Some(cache.to_owned()),
            cache_key: crate::cache_key_of_secret(secret),
            max_concurrent_calls: 2,
            max_component_bytes: crate::DEFAULT_MAX_COMPONENT_BYTES,
        })
        .unwrap();
        rt.inner
            .functions
            .as_ref()
            .unwrap()
            .set_min_component_bytes(0);
        rt
    }

    fn package(name: &str) -> crate::Package {
        crate::Package::open(&stratus_plugin_artifacts::package_dir(name)).unwrap()
    }

    fn functions(rt: &crate::Runtime) -> &FunctionCache {
        rt.inner.functions.as_ref().unwrap()
    }

    fn entries(rt: &crate::Runtime) -> Vec<PathBuf> {
        std::fs::read_dir(&functions(rt).dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Two Rust plugins share the standard library's and the bindings' functions: the second
    /// compile takes those from the first's, and what it produced still loads.
    #[tokio::test]
    async fn a_second_plugin_reuses_the_functions_it_shares_with_the_first() {
        let cache = tempfile::tempdir().unwrap();
        let rt = runtime(cache.path(), "secret");
        rt.precompile(&package("hello")).await.unwrap();
        let stored = entries(&rt).len();
        assert!(stored > 20, "{stored} functions stored");
        // A component repeats some functions (adapters, trampolines): those hit already.
        let within = functions(&rt).hits();
        let plugin = rt.load(&package("motd")).await.unwrap();
        let reused = functions(&rt).hits() - within;
        assert!(reused > 10, "{reused} functions reused");
        assert_eq!(plugin.name(), "motd");
    }

    /// Entries changed on disk are never compiled into anything: each one looked at is
    /// refused and removed, its function compiled afresh, and the plugin loads.
    #[tokio::test]
    async fn changed_entries_are_compiled_afresh() {
        let cache = tempfile::tempdir().unwrap();
        let remove_compiled = || {
            for e in std::fs::read_dir(cache.path()).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "cwasm") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        };
        let first = runtime(cache.path(), "secret");
        first.precompile(&package("hello")).await.unwrap();
        let stored = entries(&first);
        // Every entry's last byte flipped in place (another function's code, as far as anyone
        // running it would know), and the compiled component removed.
        for path in &stored {
            let mut bytes = std::fs::read(path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(path, &bytes).unwrap();
        }
        remove_compiled();
        let again = runtime(cache.path(), "secret");
        let plugin = again.load(&package("hello")).await.unwrap();
        assert_eq!(plugin.name(), "hello");
        // Not every entry is looked at again: parallel compiles of a component's repeated
        // functions do not always ask for the same ones.
        let refused = functions(&again).refused();
        let n = stored.len() as u64;
        assert!(refused * 2 >= n, "{refused} of {n} changed entries refused");
    }

    /// Below the size that gains from it, a compile neither reads nor writes an entry.
    #[tokio::test]
    async fn a_small_component_compiles_without_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        let rt = crate::Runtime::new(crate::RuntimeConfig {
            cache_dir: Some(cache.path().to_owned()),
            cache_key: crate::cache_key_of_secret("secret"),
            max_concurrent_calls: 2,
            max_component_bytes: crate::DEFAULT_MAX_COMPONENT_BYTES,
        })
        .unwrap();
        let pkg = package("hello");
        assert!(std::fs::metadata(&pkg.component_path).unwrap().len() < MIN_COMPONENT_BYTES);
        rt.precompile(&pkg).await.unwrap();
        assert!(!cache.path().join("functions").exists());
        assert_eq!(functions(&rt).hits(), 0);
    }

    /// Loading compiled code from the code cache (what every agent does) compiles nothing,
    /// so it neither scans nor reads the function cache.
    #[tokio::test]
    async fn a_code_cache_hit_leaves_the_function_cache_alone() {
        let cache = tempfile::tempdir().unwrap();
        runtime(cache.path(), "secret")
            .precompile(&package("hello"))
            .await
            .unwrap();
        let agent = runtime(cache.path(), "secret");
        let plugin = agent.load(&package("hello")).await.unwrap();
        assert_eq!(plugin.cache_status(), &crate::CacheStatus::Hit);
        assert_eq!(functions(&agent).used.load(Ordering::Relaxed), UNKNOWN);
        assert_eq!(functions(&agent).hits(), 0);
    }
}
