//! The `ssh` provider type of `stratus serve`: its factory, reading each table's
//! `identity-key` from the state directory's key management.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratus_cloud::KeyStore;
use stratus_provider::{KeyReader, ProviderFactory, SshFactory};

/// The factory `[providers.NAME] type = "ssh"` tables are built by; `program` is the binary
/// copied to the hosts.
pub fn factory(
    state_dir: &Path,
    keys_dir: &Path,
    program: PathBuf,
) -> anyhow::Result<Arc<dyn ProviderFactory>> {
    let keys = KeyStore::open(keys_dir)?;
    // The same keys are off limits as for cloud drivers: the control plane's own and the
    // services' credentials are never anyone's SSH identity.
    let reader: KeyReader = Arc::new(move |name: &str| {
        crate::cloud_drivers::readable(name)?;
        match keys.get(name) {
            Ok(Some(secret)) => Ok(secret.expose().to_owned()),
            Ok(None) => Err("there is no such key".into()),
            Err(e) => Err(e.to_string()),
        }
    });
    Ok(Arc::new(SshFactory::new(state_dir, program, reader)?))
}
