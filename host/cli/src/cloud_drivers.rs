//! The `cloud-driver` provider type of `stratus serve`: its factory, backed by a plugin runtime
//! built when a driver is first loaded and by the state directory's key management.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use stratus_cloud::KeyStore;
use stratus_plugin_runtime::cloud_driver_provider::{CloudDriverFactory, KeyReader, RuntimeSource};
use stratus_plugin_runtime::{Runtime, RuntimeConfig};
use stratus_provider::ProviderFactory;

/// Driver calls that may run at once (launches of a large tier wait for a slot).
const MAX_CONCURRENT_DRIVER_CALLS: u32 = 8;

/// The factory `[providers.NAME] type = "cloud-driver"` tables are built by.
pub fn factory(state_dir: &Path, keys_dir: &Path) -> anyhow::Result<Arc<dyn ProviderFactory>> {
    let keys = KeyStore::open(keys_dir)?;
    let reader: KeyReader = Arc::new(move |name: &str| {
        readable(name)?;
        match keys.get(name) {
            Ok(Some(secret)) => Ok(secret.expose().to_owned()),
            Ok(None) => Err("there is no such key".into()),
            Err(e) => Err(e.to_string()),
        }
    });
    let state = state_dir.to_path_buf();
    let built: Arc<OnceLock<Result<Runtime, String>>> = Arc::default();
    let source: RuntimeSource = Arc::new(move || {
        built
            .get_or_init(|| {
                let cache_key = crate::commands::plugin::cache_key(&state)
                    .map_err(|e| format!("the plugin cache key: {e}"))?;
                Runtime::new(RuntimeConfig {
                    cache_dir: Some(state.join("cache")),
                    cache_key,
                    max_concurrent_calls: MAX_CONCURRENT_DRIVER_CALLS,
                    max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
                })
                .map_err(|e| e.to_string())
            })
            .clone()
    });
    Ok(Arc::new(CloudDriverFactory::new(source, reader)))
}

/// Refuses the keys no driver may be handed, whatever a deployment file names: the control
/// plane's own (its control and operator tokens, the code cache's key) and the engine's
/// service credentials (`<deployment>/<service>/<credential>`, another deployment's
/// included). A driver sends what it gets to origins the same file grants.
pub(crate) fn readable(name: &str) -> Result<(), String> {
    use stratus_control::paths::{CACHE_KEY, CONTROL_TOKEN, OPERATOR_TOKEN};
    if [CONTROL_TOKEN, CACHE_KEY, OPERATOR_TOKEN].contains(&name) {
        return Err("it is the control plane's own key, which no driver is given".into());
    }
    if name.matches('/').count() >= 2 {
        return Err(
            "it names a service credential (deployment/service/name), which no driver is given"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_planes_keys_and_service_credentials_are_never_a_drivers() {
        for name in [
            "control-token",
            "plugin-cache-key",
            "operator-token",
            "shop/db/admin",
        ] {
            assert!(readable(name).is_err(), "{name}");
        }
        for name in ["aws-secret", "aws/prod-secret"] {
            assert!(readable(name).is_ok(), "{name}");
        }
    }
}
