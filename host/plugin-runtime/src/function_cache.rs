//! Compiled functions kept between compiles (Cranelift's incremental compilation cache, one
//! entry per function): a component that shares functions with one compiled before compiles
//! only the rest. Every Python plugin carries the same CPython and every JavaScript plugin the
//! same engine, so the second such plugin (or the next build of the one being written) costs a
//! fraction of the first.
//!
//! Entries are machine code that ends up in the components compiled from them, so, like the
//! code cache (`cache.rs`), each carries an HMAC made with the code cache's key; an entry that
//! does not verify is removed and its function compiled again. The directory holds at most
//! [`MAX_FUNCTION_CACHE_BYTES`]; past that the entries used longest ago go first.
//!
//! Only components of [`MIN_COMPONENT_BYTES`] or more use it: a small one compiles in well
//! under a second, and a file per function cost more than it saved (every launch of the test
//! suite's Rust plugins wrote hundreds of files for nothing).

use crate::cache::HmacSha256;
use hmac::Mac;
use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The most the function cache keeps on disk. One interpreter's functions take about 85 MB
/// (componentize-py's CPython, componentize-js's engine), so this holds a dozen.
pub const MAX_FUNCTION_CACHE_BYTES: u64 = 1 << 30;

/// Smallest component whose compile uses the cache: above every Rust plugin shipped (under
/// 1 MB), below every interpreter (12 MB and up).
pub const MIN_COMPONENT_BYTES: u64 = 4_000_000;

/// Longest entry kept: far above any one function's code; a larger one is compiled every time.
const MAX_ENTRY_BYTES: usize = 16 << 20;

/// Bytes of the HMAC tag in front of each entry.
const TAG_BYTES: usize = 32;

/// Cranelift's keys are SHA-256 hashes; a longer one would not make a file name.
const MAX_KEY_BYTES: usize = 64;

#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
    /// Functions found (verified) since this cache was opened.
    hits: AtomicU64,
    /// Entries found but refused (and removed) since this cache was opened.
    refused: AtomicU64,
    /// Compiles under way that use the cache; with none, it finds and keeps nothing.
    open: AtomicU64,
    min_component_bytes: AtomicU64,
}

/// Keeps the cache in use for one compile; see [`FunctionCache::open_for`].
pub(crate) struct Open<'a>(&'a FunctionCache);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FunctionCache {
    pub(crate) fn new(dir: PathBuf, key: [u8; 32]) -> FunctionCache {
        FunctionCache {
            dir,
            key,
            max_bytes: MAX_FUNCTION_CACHE_BYTES,
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
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn path(&self, key: &[u8]) -> Option<PathBuf> {
        (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then(|| self.dir.join(hex::encode(key)))
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
    fn read_verified(&self, key: &[u8], path: &Path) -> Result<Option<Vec<u8>>, String> {
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        if size < TAG_BYTES as u64 || size > (TAG_BYTES + MAX_ENTRY_BYTES) as u64 {
            return Err(format!("{size} bytes is no entry's size"));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let value = bytes.split_off(TAG_BYTES);
        self.mac(key, &value)
            .verify_slice(&bytes)
            .map_err(|_| "HMAC mismatch: entry was modified".to_string())?;
        Ok(Some(value))
    }

    /// Removes entries used longest ago (by modification time, which a hit renews) until the
    /// directory holds at most three quarters of its limit; nothing when it is under the limit.
    pub(crate) fn prune(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort();
        let keep = self.max_bytes / 4 * 3;
        let mut removed = 0usize;
        for (_, len, path) in entries {
            if total <= keep {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
            total = total.saturating_sub(len);
        }
        tracing::info!(removed, dir = %self.dir.display(), "function cache pruned to its limit");
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
                // Renewed so that pruning keeps what is still used.
                let _ = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                Some(Cow::Owned(value))
            }
            Ok(None) => None,
            Err(reason) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                tracing::warn!(%reason, entry = %path.display(), "discarded function cache entry");
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Some(path) = self.path(key).filter(|_| self.in_use()) else {
            return false;
        };
        if value.len() > MAX_ENTRY_BYTES {
            return false;
        }
        let tag = self.mac(key, &value).finalize().into_bytes();
        write_entry(&self.dir, &path, &tag, &value).is_ok()
    }
}

/// Writes an entry by rename, unsynced: one lost in a crash is a miss, and one torn fails its
/// HMAC and is removed.
fn write_entry(dir: &Path, path: &Path, tag: &[u8], value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{seq}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(tag).and_then(|()| f.write_all(value));
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
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

    #[test]
    fn an_entry_is_found_with_its_key_and_refused_with_another_secret_or_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = cache_at(dir.path(), "secret");
        let key = [7u8; 32];
        assert!(mine.get(&key).is_none());
        assert!(mine.insert(&key, b"machine code".to_vec()));
        assert_eq!(mine.get(&key).as_deref(), Some(&b"machine code"[..]));
        assert!(mine.get(&[8u8; 32]).is_none(), "another key finds nothing");

        // Another host's key never returns it, and removes it.
        assert!(cache_at(dir.path(), "other").get(&key).is_none());
        assert!(mine.get(&key).is_none(), "a refused entry is removed");

        // One byte changed in place fails the HMAC.
        assert!(mine.insert(&key, b"machine code".to_vec()));
        let path = mine.path(&key).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(mine.get(&key).is_none());
        assert!(!path.exists());

        // A valid entry renamed into another key's place is refused too.
        assert!(mine.insert(&key, b"code of 7".to_vec()));
        std::fs::rename(&path, mine.path(&[9u8; 32]).unwrap()).unwrap();
        assert!(mine.get(&[9u8; 32]).is_none());
    }

    #[test]
    fn odd_keys_and_oversized_entries_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_at(dir.path(), "secret");
        assert!(!c.insert(&[], b"x".to_vec()));
        assert!(!c.insert(&[1u8; 65], b"x".to_vec()));
        assert!(!c.insert(&[1u8; 32], vec![0u8; MAX_ENTRY_BYTES + 1]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn pruning_removes_the_entries_used_longest_ago_down_to_three_quarters() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache_at(dir.path(), "secret");
        c.max_bytes = 4 * (TAG_BYTES as u64 + 100);
        let entry = vec![0u8; 100];
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        for k in 0..5u8 {
            assert!(c.insert(&[k; 32], entry.clone()));
            let f = std::fs::File::options()
                .write(true)
                .open(c.path(&[k; 32]).unwrap())
                .unwrap();
            f.set_modified(old + std::time::Duration::from_secs(k as u64))
                .unwrap();
        }
        // A hit renews entry 0, so it outlives 1 and 2.
        assert!(c.get(&[0; 32]).is_some());
        c.prune();
        let left: Vec<bool> = (0..5u8).map(|k| c.get(&[k; 32]).is_some()).collect();
        assert_eq!(left, [true, false, false, true, true]);
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

    fn hits(rt: &crate::Runtime) -> u64 {
        rt.inner.functions.as_ref().unwrap().hits()
    }

    /// Two Rust plugins share the standard library's and the bindings' functions: the second
    /// compile takes those from the first's, and what it produced still runs.
    #[tokio::test]
    async fn a_second_plugin_reuses_the_functions_it_shares_with_the_first() {
        let cache = tempfile::tempdir().unwrap();
        let rt = runtime(cache.path(), "secret");
        rt.precompile(&package("hello")).await.unwrap();
        let stored = std::fs::read_dir(cache.path().join("functions"))
            .unwrap()
            .count();
        assert!(stored > 100, "{stored} functions stored");
        // A component repeats some functions (adapters, trampolines): those hit already.
        let within = hits(&rt);
        let plugin = rt.load(&package("motd")).await.unwrap();
        let reused = hits(&rt) - within;
        assert!(reused > 50, "{reused} functions reused");
        assert_eq!(plugin.name(), "motd");
    }

    /// Entries another key made, or changed on disk, are never compiled into anything: each
    /// one looked at is refused and removed, its function compiled afresh, and the plugin
    /// loads.
    #[tokio::test]
    async fn changed_or_foreign_entries_are_compiled_afresh() {
        let cache = tempfile::tempdir().unwrap();
        let remove_compiled = || {
            for e in std::fs::read_dir(cache.path()).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "cwasm") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        };
        runtime(cache.path(), "secret")
            .precompile(&package("hello"))
            .await
            .unwrap();
        let functions = cache.path().join("functions");
        let entries: Vec<PathBuf> = std::fs::read_dir(&functions)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        // Every entry's last byte flipped in place (another function's code, as far as anyone
        // running it would know), and the compiled component removed.
        for path in &entries {
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
        let refused = again.inner.functions.as_ref().unwrap().refused();
        let n = entries.len() as u64;
        assert!(refused * 2 >= n, "{refused} of {n} changed entries refused");

        remove_compiled();
        let stranger = runtime(cache.path(), "other");
        stranger.load(&package("hello")).await.unwrap();
        let refused = stranger.inner.functions.as_ref().unwrap().refused();
        assert!(refused * 2 >= n, "{refused} of {n} foreign entries refused");
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
        assert_eq!(hits(&rt), 0);
    }
}
