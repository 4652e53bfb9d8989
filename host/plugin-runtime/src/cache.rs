//! Compiled-code cache. `Component::deserialize` runs native code from the file without
//! validation, so every entry carries an HMAC made with a key only this host knows; an entry
//! that does not verify is thrown away and recompiled.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// How a plugin's compiled code was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from a verified cache entry.
    Hit,
    /// Compiled (no cache, or no entry yet).
    Compiled,
    /// A cache entry existed but failed verification; it was discarded and recompiled.
    Rejected(String),
}

/// The cache's HMAC key from the secret string a control plane keeps in its key file
/// (`<state>/keys/plugin-cache-key`); the agents and the control plane's precompiler derive it
/// alike, so each verifies what the other wrote.
pub fn cache_key_of_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}

/// sha256 of the component bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Feeds `Hash` output into SHA-256 so the engine's compatibility hash becomes a stable name.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Digest of everything that makes compiled code (in)compatible with this engine.
pub fn engine_digest(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

pub(crate) struct CodeCache {
    pub dir: PathBuf,
    pub key: [u8; 32],
}

impl CodeCache {
    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let code = self.dir.join(format!("{name}.cwasm"));
        let mac = self.dir.join(format!("{name}.cwasm.hmac"));
        (code, mac)
    }

    /// The MAC binds the entry's name too, so a valid entry cannot be renamed into another's place.
    fn mac(&self, name: &str, code: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(name.as_bytes());
        m.update(&[0]);
        m.update(code);
        m
    }

    /// Loads a verified entry. `Ok(None)` = no entry; `Err(reason)` = entry rejected (removed).
    ///
    /// The code is mapped from the file, not copied: every agent running a plugin then shares
    /// its compiled code through the page cache instead of holding two copies of its own (one
    /// read, one deserialized), and reads none of it twice.
    pub fn load(&self, engine: &Engine, name: &str) -> Result<Option<Component>, String> {
        let (code_path, mac_path) = self.paths(name);
        let entry = match MappedFile::open(&code_path) {
            Ok(entry) => entry,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(self.discard(name, format!("cannot read {}: {e}", code_path.display())));
            }
        };
        if let Err(reason) = self.verify(name, entry.bytes(), &mac_path) {
            return Err(self.discard(name, format!("{reason}: {}", code_path.display())));
        }
        match entry.deserialize(engine) {
            Ok(c) => Ok(Some(c)),
            Err(e) => Err(self.discard(
                name,
                format!("cannot deserialize {}: {e}", code_path.display()),
            )),
        }
    }

    /// Checks `code` against the HMAC stored at `mac_path`.
    fn verify(&self, name: &str, code: &[u8], mac_path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(mac_path)
            .map_err(|e| format!("no valid HMAC ({}: {e})", mac_path.display()))?;
        let tag =
            hex::decode(text.trim()).map_err(|_| format!("{} is not hex", mac_path.display()))?;
        self.mac(name, code)
            .verify_slice(&tag)
            .map_err(|_| "HMAC mismatch: entry was modified".to_string())
    }

    fn discard(&self, name: &str, reason: String) -> String {
        let (code, mac) = self.paths(name);
        let _ = std::fs::remove_file(code);
        let _ = std::fs::remove_file(mac);
        tracing::warn!(%reason, "discarded compiled-code cache entry");
        reason
    }

    /// Writes an entry (code, then its MAC), each atomically by rename.
    pub fn store(&self, name: &str, code: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let (code_path, mac_path) = self.paths(name);
        let tag = hex::encode(self.mac(name, code).finalize().into_bytes());
        write_atomic(&code_path, code)?;
        write_atomic(&mac_path, tag.as_bytes())
    }
}

impl CodeCache {
    /// Takes the exclusive per-entry lock `<name>.lock` (blocking); `None` when it cannot be
    /// taken, in which case compiling without it is merely redundant work, never wrong.
    pub fn lock(&self, name: &str) -> Option<nix::fcntl::Flock<std::fs::File>> {
        create_private_dir(&self.dir).ok()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{name}.lock")))
            .ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
    }
}

/// A cache entry's file, open and mapped read-only: what is verified and what is deserialized
/// are the same inode, whatever is renamed over its name meanwhile.
struct MappedFile {
    file: std::fs::File,
    map: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

impl MappedFile {
    fn open(path: &Path) -> std::io::Result<MappedFile> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        let file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        if len == 0 {
            return Err(std::io::Error::other("empty file"));
        }
        // SAFETY: a new private read-only mapping of a whole file we hold open; nothing else
        // in this process refers to that address range.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                &file,
                0,
            )
        }?;
        let map = std::ptr::NonNull::new(ptr).ok_or_else(|| std::io::Error::other("null map"))?;
        Ok(MappedFile { file, map, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes are mapped at `map` until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<u8>(), self.len) }
    }

    /// Wasmtime maps the file again itself, through this process's descriptor of it (the
    /// same inode); without `/proc`, it copies the mapped bytes instead.
    fn deserialize(&self, engine: &Engine) -> wasmtime::Result<Component> {
        use std::os::fd::AsRawFd;
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        // SAFETY: these bytes were written by `store` in this cache and authenticated with our
        // key just before, from this open file. The entry is replaced only by rename (a new
        // inode), so the inode mapped here does not change under the code; only someone
        // allowed to write the cache's files in place could change it, and such a one (root
        // or the control plane's user) can read the key as well.
        match by_fd.exists() {
            true => unsafe { Component::deserialize_file(engine, &by_fd) },
            false => unsafe { Component::deserialize(engine, self.bytes()) },
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`, which no borrow outlives.
        let _ = unsafe { rustix::mm::munmap(self.map.as_ptr(), self.len) };
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_by_rename(path, &[bytes], true)
}

/// Writes `parts` one after another to a private temporary file beside `path` (synced first
/// when `sync`), then renames it over `path`; the temporary file is removed on failure.
pub(crate) fn write_by_rename(path: &Path, parts: &[&[u8]], sync: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Unique per process and call so concurrent loads of one plugin never share a temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{seq}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = parts
        .iter()
        .try_for_each(|part| f.write_all(part))
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Package, Runtime, RuntimeConfig};

    fn runtime(dir: &Path, secret: &str, calls: u32) -> Runtime {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.to_owned()),
            cache_key: cache_key_of_secret(secret),
            max_concurrent_calls: calls,
            max_component_bytes: crate::DEFAULT_MAX_COMPONENT_BYTES,
        })
        .unwrap()
    }

    /// The control plane precompiles with a small pool, the agents load with a larger one.
    #[test]
    fn the_pool_size_is_not_part_of_compiled_code_compatibility() {
        let (small, _) =
            crate::engine::build(2, crate::engine::SlotReset::PagemapScan, None).unwrap();
        let (large, _) =
            crate::engine::build(16, crate::engine::SlotReset::PagemapScan, None).unwrap();
        assert_eq!(engine_digest(&small), engine_digest(&large));
        // Nor is whether compiles reuse cached functions: agents load what it compiled.
        let dir = tempfile::tempdir().unwrap();
        let functions = std::sync::Arc::new(crate::function_cache::FunctionCache::new(
            dir.path().to_owned(),
            [0; 32],
        ));
        let (reusing, _) =
            crate::engine::build(2, crate::engine::SlotReset::PagemapScan, Some(&functions))
                .unwrap();
        assert_eq!(engine_digest(&small), engine_digest(&reusing));
    }

    #[tokio::test]
    async fn what_one_runtime_precompiles_another_with_the_key_loads_as_a_hit() {
        let cache = tempfile::tempdir().unwrap();
        let pkg = Package::open(&stratus_plugin_artifacts::package_dir("hello")).unwrap();
        let control = runtime(cache.path(), "secret\n", 2);
        let first = control.precompile(&pkg).await.unwrap();
        assert_eq!(first.status, CacheStatus::Compiled);
        assert_eq!(
            first.language,
            Some(stratus_model::plugin::manifest::Language::Rust)
        );
        assert_eq!(
            first.bytes,
            std::fs::metadata(&pkg.component_path).unwrap().len()
        );
        let again = control.precompile(&pkg).await.unwrap();
        assert_eq!(again.status, CacheStatus::Hit);

        let agent = runtime(cache.path(), "secret", 16);
        let loaded = agent.load(&pkg).await.unwrap();
        assert_eq!(loaded.cache_status(), &CacheStatus::Hit);
        assert_eq!(loaded.sha256(), first.sha256);

        // A runtime with another key never runs the entry: it is refused and recompiled.
        let stranger = runtime(cache.path(), "other", 16);
        let status = stranger.load(&pkg).await.unwrap().cache_status().clone();
        assert!(
            matches!(status, CacheStatus::Rejected(ref r) if r.contains("HMAC")),
            "{status:?}"
        );
    }

    /// What is verified is what runs: an entry replaced by rename after it was opened does not
    /// slip in (the mapped inode stays the verified one), and the code is mapped from the
    /// cache file rather than copied.
    #[tokio::test]
    async fn the_verified_inode_is_the_one_deserialized() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = Package::open(&stratus_plugin_artifacts::package_dir("hello")).unwrap();
        runtime(dir.path(), "secret", 2)
            .precompile(&pkg)
            .await
            .unwrap();
        let code = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        let name = code.file_stem().unwrap().to_str().unwrap().to_string();
        let cache = CodeCache {
            dir: dir.path().to_owned(),
            key: cache_key_of_secret("secret"),
        };
        let entry = MappedFile::open(&code).unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, b"not compiled code").unwrap();
        std::fs::rename(&garbage, &code).unwrap();
        cache
            .verify(
                &name,
                entry.bytes(),
                &dir.path().join(format!("{name}.cwasm.hmac")),
            )
            .unwrap();
        let (engine, _) =
            crate::engine::build(2, crate::engine::SlotReset::PagemapScan, None).unwrap();
        let component = entry.deserialize(&engine).unwrap();
        assert!(component.component_type().exports(&engine).count() > 0);
        drop(entry);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            maps.lines().any(|l| l.contains(&format!("{name}.cwasm"))),
            "the code is not mapped from the cache file"
        );
        // Loading by name now finds the garbage and throws it away.
        let refused = cache.load(&engine, &name).err().unwrap();
        assert!(refused.contains("HMAC mismatch"), "{refused}");
        assert!(!code.exists(), "a rejected entry is removed");
    }
}
