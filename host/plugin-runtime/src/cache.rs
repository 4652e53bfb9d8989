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

type HmacSha256 = Hmac<Sha256>;

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
    pub fn load(&self, engine: &Engine, name: &str) -> Result<Option<Component>, String> {
        let (code_path, mac_path) = self.paths(name);
        let code = match std::fs::read(&code_path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(self.discard(name, format!("cannot read {}: {e}", code_path.display())));
            }
        };
        let verdict = match std::fs::read_to_string(&mac_path) {
            Err(e) => Err(format!(
                "no valid HMAC next to {}: {e}",
                code_path.display()
            )),
            Ok(text) => match hex::decode(text.trim()) {
                Err(_) => Err(format!("{} is not hex", mac_path.display())),
                Ok(tag) => self.mac(name, &code).verify_slice(&tag).map_err(|_| {
                    format!(
                        "HMAC mismatch for {}: entry was modified",
                        code_path.display()
                    )
                }),
            },
        };
        if let Err(reason) = verdict {
            return Err(self.discard(name, reason));
        }
        // SAFETY: the bytes were written by `store` in this cache and authenticated with our
        // key just above; we deserialize the verified bytes, not the file, so a swap after the
        // check cannot slip in.
        match unsafe { Component::deserialize(engine, &code) } {
            Ok(c) => Ok(Some(c)),
            Err(e) => Err(self.discard(
                name,
                format!("cannot deserialize {}: {e}", code_path.display()),
            )),
        }
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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
        let (small, _) = crate::engine::build(2, crate::engine::SlotReset::PagemapScan).unwrap();
        let (large, _) = crate::engine::build(16, crate::engine::SlotReset::PagemapScan).unwrap();
        assert_eq!(engine_digest(&small), engine_digest(&large));
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
}
