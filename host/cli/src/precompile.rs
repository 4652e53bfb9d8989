//! The control plane's `Precompiler`: the plugin runtime compiling uploaded packages into the
//! code cache its agents share, with the key they verify entries with, so each component is
//! compiled once per control plane. The runtime is built at the first package, so a control
//! plane that launches nothing builds no WebAssembly engine.

use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::time::Instant;
use stratus_engine::{ComponentSummary, Precompiled, Precompiler};
use stratus_plugin_runtime::{CacheStatus, Package, Runtime, RuntimeConfig};
use tokio::sync::OnceCell;

/// Sizes the instance pool only: the agents' engine (16) compiles the same code, because
/// the pool's size is not part of what makes compiled code compatible (tested in the runtime).
const MAX_CONCURRENT_CALLS: u32 = 2;

pub struct RuntimePrecompiler {
    cache_dir: PathBuf,
    key_file: PathBuf,
    runtime: OnceCell<Result<Runtime, String>>,
}

impl RuntimePrecompiler {
    /// Compiles into `cache_dir` with the key whose secret is in `key_file`: the directory
    /// and key file the control plane passes to its agents.
    pub fn new(cache_dir: PathBuf, key_file: PathBuf) -> RuntimePrecompiler {
        RuntimePrecompiler {
            cache_dir,
            key_file,
            runtime: OnceCell::new(),
        }
    }

    async fn runtime(&self) -> Result<&Runtime, String> {
        let built = self
            .runtime
            .get_or_init(|| async {
                let secret = std::fs::read_to_string(&self.key_file).map_err(|e| {
                    format!(
                        "cannot read the code cache key {}: {e}",
                        self.key_file.display()
                    )
                })?;
                let config = RuntimeConfig {
                    cache_dir: Some(self.cache_dir.clone()),
                    cache_key: stratus_plugin_runtime::cache_key_of_secret(&secret),
                    max_concurrent_calls: MAX_CONCURRENT_CALLS,
                    max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
                };
                Runtime::new(config).map_err(|e| e.to_string())
            })
            .await;
        built.as_ref().map_err(Clone::clone)
    }
}

/// The package's component file, size and language (its sections first, then its manifest's
/// `[build]`, which is only ever absent or right for components `stratus plugin build` made).
fn summary(package: &Path) -> Result<ComponentSummary, String> {
    let pkg = Package::open(package).map_err(|e| e.to_string())?;
    let limit = stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES;
    let cannot = |e: std::io::Error| format!("{}: {e}", pkg.component_path.display());
    let bytes = std::fs::metadata(&pkg.component_path)
        .map_err(cannot)?
        .len();
    if bytes > limit {
        return Err(format!(
            "{} is {bytes} bytes, over the limit of {limit}",
            pkg.component_path.display()
        ));
    }
    let code = std::fs::read(&pkg.component_path).map_err(cannot)?;
    let language = stratus_plugin_runtime::language_of(&code)
        .or_else(|| pkg.manifest.as_ref().map(|m| m.build.language))
        .map_or("unknown".to_string(), |l| l.to_string());
    Ok(ComponentSummary {
        language,
        bytes: code.len() as u64,
    })
}

impl Precompiler for RuntimePrecompiler {
    fn describe<'a>(
        &'a self,
        package: &'a Path,
    ) -> BoxFuture<'a, Result<ComponentSummary, String>> {
        let package = package.to_path_buf();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || summary(&package))
                .await
                .map_err(|e| format!("describe task failed: {e}"))?
        })
    }

    fn precompile<'a>(&'a self, package: &'a Path) -> BoxFuture<'a, Result<Precompiled, String>> {
        Box::pin(async move {
            let runtime = self.runtime().await?;
            let pkg = Package::open(package).map_err(|e| e.to_string())?;
            let started = Instant::now();
            let done = runtime.precompile(&pkg).await.map_err(|e| e.to_string())?;
            if let CacheStatus::Rejected(reason) = &done.status {
                tracing::warn!(%reason, "a code cache entry failed verification; recompiled");
            }
            Ok(Precompiled {
                sha256: done.sha256,
                cached: done.status == CacheStatus::Hit,
                millis: started.elapsed().as_millis() as u64,
            })
        })
    }
}
