//! The cloud-driver provider: a `CloudProvider` over a loaded cloud driver, built by
//! [`CloudDriverFactory`] for `[providers.NAME]` tables with `type = "cloud-driver"`.
//!
//! ```toml
//! [providers.ec2]
//! type = "cloud-driver"
//! driver = "/opt/stratus/drivers/ec2-driver"   # the driver's package directory
//! http = ["https://ec2.us-east-1.amazonaws.com"]
//! endpoint = "https://ec2.us-east-1.amazonaws.com"
//! region = "us-east-1"
//! image = "ami-0123456789abcdef0"
//! access-key-id = "AKIA…"
//! secret-access-key = "aws-secret"             # a key in key management
//! ```
//!
//! Settings whose value is a key reference (`key`, `*-key`) reach the driver as secrets under
//! the setting's name, with the key's value read from key management at each call (so a
//! rotated key is used at once); everything else but `driver` and `http` as settings.

use crate::cloud_driver::{
    CloudDriver, DriverConfig, DriverError, DriverSettings, ServerHandle, ServerState,
};
use crate::runtime::Runtime;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_provider::{
    BoxFuture, Capacity, CloudProvider, LaunchRequest, LaunchedServer, Presence, ProviderError,
    ProviderFactory, ProviderHandle, ProviderSettings, SettingValue,
};

/// The `type` of a cloud-driver provider table.
pub const KIND: &str = "cloud-driver";
/// The agent's `--root` on a server a driver brings up: the whole machine is the server.
pub const AGENT_ROOT: &str = "/";

/// Reads a key from key management by name (the control plane's `KeyStore`), or says why not.
pub type KeyReader = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;
/// Gives the plugin runtime drivers run in, built when a driver is first loaded (a control
/// plane with no cloud-driver provider never builds one).
pub type RuntimeSource = Arc<dyn Fn() -> Result<Runtime, String> + Send + Sync>;

/// Builds cloud-driver providers; registered in the control plane's `ProviderRegistry`.
pub struct CloudDriverFactory {
    runtime: RuntimeSource,
    keys: KeyReader,
    /// Shared by every provider it builds, as the runtime's driver-call slots are.
    describing: Arc<tokio::sync::Semaphore>,
}

impl CloudDriverFactory {
    pub fn new(runtime: RuntimeSource, keys: KeyReader) -> CloudDriverFactory {
        let describing = Arc::new(tokio::sync::Semaphore::new(DESCRIBES_AT_ONCE));
        CloudDriverFactory {
            runtime,
            keys,
            describing,
        }
    }
}

impl ProviderFactory for CloudDriverFactory {
    fn kind(&self) -> &str {
        KIND
    }

    fn create(
        &self,
        name: &str,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        let settings = DriverSettings::parse(name, &as_table(settings)).map_err(|e| {
            ProviderError::Settings {
                provider: name.to_owned(),
                message: e.to_string(),
            }
        })?;
        Ok(Arc::new(CloudDriverProvider {
            name: name.to_owned(),
            runtime: self.runtime.clone(),
            keys: self.keys.clone(),
            settings,
            driver: tokio::sync::OnceCell::new(),
            describing: self.describing.clone(),
        }))
    }
}

/// The settings as the table [`DriverSettings::parse`] reads: key references gathered under
/// `secrets`.
fn as_table(settings: &ProviderSettings) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut table = serde_json::Map::new();
    let mut secrets = serde_json::Map::new();
    for (key, value) in settings {
        let v = match value {
            SettingValue::Text(s) => Value::from(s.clone()),
            SettingValue::Integer(i) => Value::from(*i),
            SettingValue::Bool(b) => Value::from(*b),
            SettingValue::List(l) => Value::from(l.clone()),
            SettingValue::Key(k) => {
                secrets.insert(key.clone(), Value::from(k.clone()));
                continue;
            }
        };
        table.insert(key.clone(), v);
    }
    table.insert("secrets".into(), Value::Object(secrets));
    table
}

/// One `[providers.NAME]` of type `cloud-driver`: its settings and, once first used, its
/// loaded driver.
pub struct CloudDriverProvider {
    name: String,
    runtime: RuntimeSource,
    keys: KeyReader,
    settings: DriverSettings,
    driver: tokio::sync::OnceCell<CloudDriver>,
    /// Held by each `describe`, shared with every provider of the control plane: see
    /// [`DESCRIBES_AT_ONCE`].
    describing: Arc<tokio::sync::Semaphore>,
}

/// Recovery asks about many servers at once, and every driver call of the control plane waits
/// for one of a few runtime slots: at most this many describes run together in the whole
/// control plane (whatever the deployment or provider), so most slots stay free for launches
/// and terminates. A describe on a launch path (adopting a server after a crash) waits its
/// turn among them.
const DESCRIBES_AT_ONCE: usize = 2;

impl CloudDriverProvider {
    /// The driver, loaded (and compiled) at its first use.
    async fn driver(&self) -> Result<&CloudDriver, ProviderError> {
        if let Some(loaded) = self.driver.get() {
            return Ok(loaded);
        }
        let package: PathBuf = self.settings.driver.clone();
        let runtime = (self.runtime)().map_err(|e| {
            ProviderError::Task(format!("provider `{}`: no plugin runtime: {e}", self.name))
        })?;
        self.driver
            .get_or_try_init(|| async { runtime.load_cloud_driver(&package).await })
            .await
            .map_err(|e| self.failed(e))
    }

    /// The configuration of a call, with the secrets read now.
    fn config(&self) -> Result<DriverConfig, ProviderError> {
        let keys = self.keys.clone();
        self.settings
            .config(&self.name, |key| keys(key))
            .map_err(|e| ProviderError::Settings {
                provider: self.name.clone(),
                message: e.to_string(),
            })
    }

    fn failed(&self, e: DriverError) -> ProviderError {
        ProviderError::Task(format!("provider `{}`: {e}", self.name))
    }

    fn server_handle(&self, handle: &ProviderHandle) -> Result<ServerHandle, ProviderError> {
        handle.decode()
    }

    async fn launched(&self, req: &LaunchRequest) -> Result<LaunchedServer, ProviderError> {
        let driver = self.driver().await?;
        let config = self.config()?;
        // The address is the cloud's to give; the agent learns it on its server.
        let bootstrap = serde_json::to_string(&req.bootstrap(""))
            .map_err(|e| ProviderError::Task(format!("bootstrap: {e}")))?;
        let handle = driver
            .launch(&req.server_name, &bootstrap, &config)
            .await
            .map_err(|e| self.failed(e))?;
        let address = match handle.address {
            Some(IpAddr::V4(a)) => a,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let data = serde_json::to_value(&handle)
            .map_err(|e| ProviderError::Task(format!("handle: {e}")))?;
        Ok(LaunchedServer {
            server_id: req.server_id.clone(),
            address,
            handle: ProviderHandle {
                provider: self.name.clone(),
                data,
            },
        })
    }

    async fn presence(&self, handle: &ProviderHandle) -> Presence {
        let unknown = |e: ProviderError| Presence::Unknown(e.to_string());
        let Ok(_turn) = self.describing.acquire().await else {
            return Presence::Unknown("the provider is closing".into());
        };
        let server = match self.server_handle(handle) {
            Ok(s) => s,
            Err(e) => return unknown(e),
        };
        let (driver, config) = match (self.driver().await, self.config()) {
            (Ok(d), Ok(c)) => (d, c),
            (Err(e), _) | (_, Err(e)) => return unknown(e),
        };
        match driver.describe(&server, &config).await {
            Ok(ServerState::Gone) => Presence::Gone,
            Ok(_) => Presence::Exists,
            Err(e) => unknown(self.failed(e)),
        }
    }

    async fn ended(&self, server: &LaunchedServer) -> Result<(), ProviderError> {
        let handle = self.server_handle(&server.handle)?;
        let config = self.config()?;
        self.driver()
            .await?
            .terminate(&handle, &config)
            .await
            .map_err(|e| self.failed(e))
    }
}

impl CloudProvider for CloudDriverProvider {
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'_, Result<LaunchedServer, ProviderError>> {
        Box::pin(async move { self.launched(&req).await })
    }

    /// Ends the instance through the driver; the cloud decides how politely (`grace` is not
    /// the driver's to choose).
    fn terminate<'a>(
        &'a self,
        server: &'a LaunchedServer,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.ended(server))
    }

    fn describe<'a>(&'a self, handle: &'a ProviderHandle) -> BoxFuture<'a, Presence> {
        Box::pin(self.presence(handle))
    }

    fn root_of(&self, _handle: &ProviderHandle) -> Result<String, ProviderError> {
        Ok(AGENT_ROOT.into())
    }

    /// The cloud's own quotas bound a driver's servers; the host sets no limit.
    fn capacity(&self) -> Result<Capacity, ProviderError> {
        Ok(Capacity {
            max: u64::MAX,
            used: 0,
        })
    }

    /// A server's disk ends with its instance; the arguments are checked as every provider
    /// checks them.
    fn end_disk<'a>(
        &'a self,
        deployment: &'a str,
        server: &'a LaunchedServer,
        keep: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<PathBuf>, ProviderError>> {
        let checked = stratus_provider::check_end_disk(deployment, server, keep);
        Box::pin(async move { checked.map(|()| None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_become_the_drivers_secrets() {
        let settings = ProviderSettings::from([
            ("driver".into(), SettingValue::Text("/d".into())),
            (
                "http".into(),
                SettingValue::List(vec!["http://127.0.0.1:4566".into()]),
            ),
            ("region".into(), SettingValue::Text("us-east-1".into())),
            (
                "secret-access-key".into(),
                SettingValue::Key("aws-secret".into()),
            ),
        ]);
        let s = DriverSettings::parse("ec2", &as_table(&settings)).unwrap();
        assert_eq!(
            s.secrets,
            vec![("secret-access-key".into(), "aws-secret".into())]
        );
        assert_eq!(s.settings, vec![("region".into(), "us-east-1".into())]);
    }
}
