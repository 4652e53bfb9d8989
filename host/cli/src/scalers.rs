//! Custom scaling rules for the control plane: its `ScalerRules` backed by the plugin
//! runtime, which is built at the first rule that runs, so a control plane whose deployments
//! have no custom rule never builds a WebAssembly engine.

use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use stratus_control::app::ScalerRules;
use stratus_model::ids::Name;
use stratus_model::metrics::ServerWindow;
use stratus_model::scaling::{ScalingPolicy, Vote};
use stratus_plugin_runtime::{Runtime, RuntimeConfig};
use tokio::sync::OnceCell;

/// Scaler calls that may run at once (tiers are judged one after another; this is headroom).
const MAX_CONCURRENT_CALLS: u32 = 2;

pub struct RuntimeScalers {
    state_dir: PathBuf,
    runtime: OnceCell<Result<Runtime, String>>,
}

impl RuntimeScalers {
    pub fn new(state_dir: PathBuf) -> RuntimeScalers {
        RuntimeScalers {
            state_dir,
            runtime: OnceCell::new(),
        }
    }

    async fn runtime(&self) -> Result<&Runtime, String> {
        let built = self
            .runtime
            .get_or_init(|| async {
                let config = RuntimeConfig {
                    cache_dir: Some(self.state_dir.join("cache")),
                    cache_key: crate::commands::plugin::cache_key(&self.state_dir)
                        .map_err(|e| format!("the plugin cache key: {e}"))?,
                    max_concurrent_calls: MAX_CONCURRENT_CALLS,
                    max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
                };
                Runtime::new(config).map_err(|e| e.to_string())
            })
            .await;
        built.as_ref().map_err(Clone::clone)
    }
}

impl ScalerRules for RuntimeScalers {
    fn scale_check<'a>(
        &'a self,
        package: &'a Path,
        tier: &'a Name,
        policy: &'a ScalingPolicy,
        now_ms: u64,
        windows: &'a [ServerWindow],
    ) -> BoxFuture<'a, Result<Vec<Vote>, String>> {
        Box::pin(async move {
            let runtime = self.runtime().await?;
            runtime
                .scale_check(package, tier, policy, now_ms, windows)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
