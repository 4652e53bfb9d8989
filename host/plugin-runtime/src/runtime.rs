//! `Runtime` (one engine, one linker per world, the code cache) and `Plugin` (a compiled,
//! type-checked component ready to instantiate per call).

use crate::bindings::{cm::CmPre, proxy::ProxyPre, service::ServicePre};
use crate::cache::{CacheStatus, CodeCache, engine_digest, sha256_hex};
use crate::call::State;
use crate::capabilities::Capabilities;
use crate::engine::{self, Allocator, SlotReset};
use crate::failure::LoadError;
use crate::function_cache::FunctionCache;
use crate::inspect::{ComponentInfo, describe};
use crate::package::Package;
use crate::wit_version::HOST_WIT_VERSION;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use stratus_model::context::World;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// How to build a `Runtime`.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Authenticates cache entries; keep it secret (e.g. a 0600 key file).
    pub cache_key: [u8; 32],
    /// Hook calls that may run at once; sizes the instance pool. Further calls wait.
    pub max_concurrent_calls: u32,
    /// Largest component file loaded; a larger one is refused before it is read
    /// (default [`DEFAULT_MAX_COMPONENT_BYTES`]).
    pub max_component_bytes: u64,
}

/// Default cap on a component's size (256 MB): far above any real plugin (ours are under
/// 1 MB), low enough that loading cannot exhaust memory or stall compilation.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 256_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
}

/// The plugin host; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub allocator: Allocator,
    engine_digest: String,
    /// The service, proxy and CM worlds' linkers, each made on first use: an agent that runs
    /// one service's hooks never pays for the others' (building all four linkers was 4–9 % of
    /// an agent's CPU in a launch).
    linkers: [OnceLock<Linker<State>>; 3],
    cache: Option<CodeCache>,
    /// Functions compiled before, reused by the next compile (`function_cache.rs`).
    pub(crate) functions: Option<Arc<FunctionCache>>,
    pub max_component_bytes: u64,
    /// Compiled scaling rules (scaler.rs).
    pub scalers: crate::scaler::Scalers,
    /// Bounds concurrent calls to what the pool was sized for.
    pub calls: Semaphore,
}

fn linker(engine: &Engine, world: World) -> wasmtime::Result<Linker<State>> {
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut l)?;
    crate::guest_open::add_to_linker(&mut l)?;
    match world {
        World::Service => {
            crate::bindings::service::Service::add_to_linker::<_, HasSelf<State>>(&mut l, |s| s)?
        }
        World::Proxy => {
            crate::bindings::proxy::Proxy::add_to_linker::<_, HasSelf<State>>(&mut l, |s| s)?
        }
        World::Cm => crate::bindings::cm::Cm::add_to_linker::<_, HasSelf<State>>(&mut l, |s| s)?,
        // A scaler or a cloud driver imports no host functions; each has its own linker
        // (scaler.rs, cloud_driver.rs).
        World::Scaler | World::CloudDriver => {}
    }
    Ok(l)
}

impl Runtime {
    /// Builds the engine (pooling allocator, falling back to on-demand), the linkers and the
    /// epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        Runtime::with_slot_reset(config, engine::DEFAULT_SLOT_RESET)
    }

    /// [`Runtime::new`] with a chosen way of resetting pool slots; for the benchmark that
    /// compares them side by side.
    #[doc(hidden)]
    pub fn with_slot_reset(
        config: RuntimeConfig,
        reset: SlotReset,
    ) -> Result<Runtime, RuntimeError> {
        let n = config.max_concurrent_calls.max(1);
        let functions = config
            .cache_dir
            .as_ref()
            .map(|dir| Arc::new(FunctionCache::new(dir.join("functions"), config.cache_key)));
        let (engine, allocator) = engine::build(n, reset, functions.as_ref())
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let scalers = crate::scaler::Scalers::default();
        crate::epoch::start_ticker(&engine);
        let cache = config.cache_dir.map(|dir| CodeCache {
            dir,
            key: config.cache_key,
        });
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine_digest: engine_digest(&engine),
                engine,
                allocator,
                linkers: Default::default(),
                cache,
                functions,
                max_component_bytes: config.max_component_bytes,
                scalers,
                calls: Semaphore::new(n as usize),
            }),
        })
    }

    /// Whether the pooling allocator could be used.
    pub fn allocator(&self) -> Allocator {
        self.inner.allocator
    }

    /// Compiles (or loads from the cache) and type-checks a package's component.
    pub async fn load(&self, pkg: &Package) -> Result<Plugin, LoadError> {
        self.load_known(pkg, None).await
    }

    /// [`Runtime::load`] for a package whose component the caller verified as it arrived
    /// (an agent's sealed copy, checked against the package manifest's SHA-256): a code-cache
    /// hit then reads and hashes nothing of the component, which for an interpreter plugin is
    /// tens of megabytes per server. On a miss the component is read, and refused unless its
    /// SHA-256 is still `sha256`.
    pub async fn load_verified(&self, pkg: &Package, sha256: &str) -> Result<Plugin, LoadError> {
        // It names a file in the cache: nothing but the 64 hex digits a digest is.
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if sha256.len() != 64 || !sha256.bytes().all(hex) {
            return Err(LoadError::Host(format!(
                "{sha256:?} is not a SHA-256 in lower-case hex"
            )));
        }
        self.load_known(pkg, Some(sha256.to_owned())).await
    }

    async fn load_known(&self, pkg: &Package, known: Option<String>) -> Result<Plugin, LoadError> {
        let path = pkg.component_path.clone();
        let rt = self.clone();
        let compiled = tokio::task::spawn_blocking(move || rt.compiled(&path, known))
            .await
            .map_err(|e| LoadError::Host(format!("compile task failed: {e}")))??;
        let (component, cache_status, sha256) = compiled;
        let info = describe(&self.inner.engine, &component);
        let names = info
            .imports
            .iter()
            .chain(info.exports.iter().map(|e| &e.name));
        crate::wit_version::check(names.map(String::as_str), HOST_WIT_VERSION)?;
        let world = match pkg.world().or(info.world) {
            Some(w) => w,
            None => {
                return Err(LoadError::WrongWorld {
                    expected: "service, proxy or cm".into(),
                    found: info.summary(),
                });
            }
        };
        let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
            expected: world.to_string(),
            found: format!("{}: {e:#}", info.summary()),
        };
        let pre = self.pre(world, &component, wrong)?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                runtime: self.clone(),
                name: pkg.name(),
                world,
                sha256,
                capabilities: pkg.capabilities(),
                cache_status,
                info,
                pre,
                dir: pkg.dir.clone(),
                last_redactor: std::sync::Mutex::default(),
                last_context: std::sync::Mutex::default(),
            }),
        })
    }

    /// Compiles a package's component into the code cache, or finds its verified entry there,
    /// without type-checking it: ahead of time, so that every runtime sharing the cache (and
    /// its key) loads it as a [`CacheStatus::Hit`]. Without a cache it only compiles.
    pub async fn precompile(&self, pkg: &Package) -> Result<Precompiled, LoadError> {
        let path = pkg.component_path.clone();
        let limit = self.inner.max_component_bytes;
        let rt = self.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = read_component(&path, limit)?;
            let (_, status, sha256) = rt.compile(&bytes, &path)?;
            Ok(Precompiled {
                sha256,
                bytes: bytes.len() as u64,
                language: crate::language::language_of(&bytes),
                status,
            })
        })
        .await
        .map_err(|e| LoadError::Host(format!("compile task failed: {e}")))?
    }

    /// The component instantiated ahead for `world`; `wrong` names a component that does not
    /// fit the world.
    fn pre(
        &self,
        world: World,
        component: &Component,
        wrong: impl Fn(wasmtime::Error) -> LoadError,
    ) -> Result<Pre, LoadError> {
        let slot = match world {
            World::Service => 0,
            World::Proxy => 1,
            World::Cm => 2,
            World::Scaler => {
                return Err(wrong(wasmtime::Error::msg(
                    "a scaler has no hooks; it is called through Runtime::scale_check",
                )));
            }
            World::CloudDriver => {
                return Err(wrong(wasmtime::Error::msg(
                    "a cloud driver has no hooks; it is loaded with Runtime::load_cloud_driver",
                )));
            }
        };
        let l = self.linker_of(slot, world)?;
        let pre = |c| l.instantiate_pre(c);
        Ok(match world {
            World::Service => {
                Pre::Service(pre(component).and_then(ServicePre::new).map_err(wrong)?)
            }
            World::Proxy => Pre::Proxy(pre(component).and_then(ProxyPre::new).map_err(wrong)?),
            _ => Pre::Cm(pre(component).and_then(CmPre::new).map_err(wrong)?),
        })
    }

    /// The linker of `world` (in `slot` of the runtime's), made the first time it is needed.
    fn linker_of(&self, slot: usize, world: World) -> Result<&Linker<State>, LoadError> {
        let cell = &self.inner.linkers[slot];
        if let Some(l) = cell.get() {
            return Ok(l);
        }
        let made = linker(&self.inner.engine, world)
            .map_err(|e| LoadError::Host(format!("cannot link the host functions: {e:#}")))?;
        // Two first loads at once may both make one; the first stored is kept.
        Ok(cell.get_or_init(|| made))
    }

    /// The compiled component at `path`: straight from the code cache when its SHA-256 is
    /// `known`, else read (within the size limit), looked up and, on a miss, compiled.
    fn compiled(
        &self,
        path: &Path,
        known: Option<String>,
    ) -> Result<(Component, CacheStatus, String), LoadError> {
        let mut rejected = None;
        // A hit reads nothing, but the file must still be there and within the size limit
        // (else it is read below, which names the problem).
        let fits = |m: std::fs::Metadata| m.is_file() && m.len() <= self.inner.max_component_bytes;
        if let (Some(sha), Some(cache)) = (&known, &self.inner.cache)
            && std::fs::metadata(path).is_ok_and(fits)
        {
            match cache.load(&self.inner.engine, &self.entry_name(sha)) {
                Ok(Some(c)) => return Ok((c, CacheStatus::Hit, sha.clone())),
                Ok(None) => {}
                // Removed by the cache; the compile below replaces it and says why.
                Err(reason) => rejected = Some(reason),
            }
        }
        let bytes = read_component(path, self.inner.max_component_bytes)?;
        let actual = sha256_hex(&bytes);
        if let Some(expected) = known
            && actual != expected
        {
            return Err(LoadError::NotVerified {
                path: path.to_owned(),
                expected,
                actual,
            });
        }
        self.compile_hashed(&bytes, actual, path, rejected)
    }

    /// The code-cache entry of the component whose SHA-256 (hex) is `sha`, for this engine.
    fn entry_name(&self, sha: &str) -> String {
        format!("{sha}-{}", self.inner.engine_digest)
    }

    /// Loads verified compiled code from the cache, else compiles and caches it.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        path: &Path,
    ) -> Result<(Component, CacheStatus, String), LoadError> {
        self.compile_hashed(bytes, sha256_hex(bytes), path, None)
    }

    /// [`Runtime::compile`] of `bytes` whose SHA-256 (hex) is `sha`; `rejected` says why its
    /// cache entry was already refused (and removed) by an earlier look.
    fn compile_hashed(
        &self,
        bytes: &[u8],
        sha: String,
        path: &Path,
        rejected: Option<String>,
    ) -> Result<(Component, CacheStatus, String), LoadError> {
        let engine = &self.inner.engine;
        let name = self.entry_name(&sha);
        let mut status = rejected.map_or(CacheStatus::Compiled, CacheStatus::Rejected);
        let mut _compiling = None;
        if let Some(cache) = &self.inner.cache {
            // A hit needs no lock. On a miss, agents of one machine sharing the cache take the
            // entry's lock: the first compiles, the others wait and then find its entry.
            let mut found = cache.load(engine, &name);
            if matches!(found, Ok(None)) {
                _compiling = cache.lock(&name);
                found = cache.load(engine, &name);
            }
            match found {
                Ok(Some(c)) => return Ok((c, CacheStatus::Hit, sha)),
                Ok(None) => {}
                Err(reason) => status = CacheStatus::Rejected(reason),
            }
        }
        // Opened only now: a code-cache hit (every agent loading an interpreter plugin) must
        // not pay for the function cache's first directory scan.
        let functions = self.inner.functions.as_deref();
        let reusing = functions.and_then(|f| f.open_for(bytes.len() as u64));
        let refused_before = functions.map_or(0, |f| f.refused());
        let component = Component::new(engine, bytes).map_err(|e| LoadError::CorruptComponent {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Some(cache) = &self.inner.cache {
            let stored = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|code| cache.store(&name, &code).map_err(|e| e.to_string()));
            if let Err(e) = stored {
                tracing::warn!(error = %e, dir = %cache.dir.display(), "cannot write compiled-code cache");
            }
        }
        if let (Some(functions), Some(_)) = (functions, &reusing) {
            let refused = functions.refused() - refused_before;
            if refused > 0 {
                tracing::warn!(
                    refused,
                    "function cache entries failed verification (changed on disk) and were \
                     compiled again"
                );
            }
        }
        Ok((component, status, sha))
    }
}

/// Reads a component file, refusing one over `limit` bytes before reading it whole.
fn read_component(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let too_large = |size| LoadError::TooLarge {
        path: path.to_owned(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow after the check; never read past the limit.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What [`Runtime::precompile`] did.
#[derive(Debug, Clone)]
pub struct Precompiled {
    /// sha256 of the component (hex), which names its cache entry.
    pub sha256: String,
    pub bytes: u64,
    /// What the component's sections say it was written in (`language.rs`).
    pub language: Option<stratus_model::plugin::manifest::Language>,
    /// `Hit`: a verified entry was there; `Compiled` (or `Rejected`): compiled and stored.
    pub status: CacheStatus,
}

pub(crate) enum Pre {
    Service(ServicePre<State>),
    Proxy(ProxyPre<State>),
    Cm(CmPre<State>),
}

/// A loaded plugin; cheap to clone, safe to call concurrently (each call gets its own store).
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

pub(crate) struct PluginInner {
    pub runtime: Runtime,
    pub name: String,
    pub world: World,
    pub sha256: String,
    pub capabilities: Capabilities,
    pub cache_status: CacheStatus,
    pub info: ComponentInfo,
    pub pre: Pre,
    pub dir: PathBuf,
    /// The redactor of the last call and the secrets it was built for: consecutive calls of a
    /// service carry the same secrets, and building one costs more than a trivial call.
    pub last_redactor: std::sync::Mutex<Option<(Vec<String>, crate::output::Redactor)>>,
    /// The context of the last call, shared read-only with the next call if equal: cloning
    /// it cost a warm call more than comparing it (call.rs).
    pub last_context: std::sync::Mutex<Option<Arc<stratus_model::context::ServiceContext>>>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn world(&self) -> World {
        self.inner.world
    }
    /// sha256 of the component bytes (hex).
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }
    /// The manifest's capabilities (before any operator narrowing).
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }
    pub fn cache_status(&self) -> &CacheStatus {
        &self.inner.cache_status
    }
    pub fn info(&self) -> &ComponentInfo {
        &self.inner.info
    }
    /// The package directory it was loaded from.
    pub fn package_dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("world", &self.inner.world)
            .field("sha256", &self.inner.sha256)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_over_the_limit_is_refused_naming_size_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.wasm");
        std::fs::write(&path, vec![0u8; 1001]).unwrap();
        let err = read_component(&path, 1000).unwrap_err();
        assert!(matches!(
            err,
            LoadError::TooLarge {
                size: 1001,
                limit: 1000,
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.contains("1001 bytes") && text.contains("limit of 1000"),
            "{text}"
        );
        assert_eq!(read_component(&path, 1001).unwrap().len(), 1001);
    }
}
