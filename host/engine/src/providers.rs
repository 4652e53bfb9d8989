//! Which provider the engine asks: a tier's launches go to the provider its `provider` names,
//! everything about a launched server to the provider named in its stored handle.

use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use std::sync::Arc;
use stratus_model::spec::{DeploymentSpec, ProviderSetting, TierSpec};
use stratus_model::state::{AgentState, DeploymentState};
use stratus_provider::{
    CloudProvider, LaunchedServer, Presence, ProviderError, ProviderHandle, ProviderSettings,
    SettingValue,
};
use stratus_store::ServerRow;

/// A provider's failure outside a journaled step, as the engine reports it.
fn provider_error(step: &str) -> impl FnOnce(ProviderError) -> EngineError + '_ {
    move |e| EngineError::Provider {
        step: step.to_string(),
        message: e.to_string(),
    }
}

/// The settings of a `[providers.NAME]` table as its factory takes them.
fn settings_of(settings: &std::collections::BTreeMap<String, ProviderSetting>) -> ProviderSettings {
    settings
        .iter()
        .map(|(k, v)| {
            let v = match v {
                ProviderSetting::Text(s) => SettingValue::Text(s.clone()),
                ProviderSetting::Integer(i) => SettingValue::Integer(*i),
                ProviderSetting::Bool(b) => SettingValue::Bool(*b),
                ProviderSetting::List(l) => SettingValue::List(l.clone()),
                ProviderSetting::Key(k) => SettingValue::Key(k.clone()),
            };
            (k.clone(), v)
        })
        .collect()
}

/// The handle of a stored server, if its provider gave one.
pub(crate) fn handle_of(row: &ServerRow<AgentState>) -> Option<ProviderHandle> {
    row.handle.as_ref().map(|data| ProviderHandle {
        provider: row.provider.clone(),
        data: data.clone(),
    })
}

/// The provider's view of a stored server.
pub(crate) fn launched_of(row: &ServerRow<AgentState>) -> Option<LaunchedServer> {
    Some(LaunchedServer {
        server_id: row.id.clone(),
        address: row.address.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
        handle: handle_of(row)?,
    })
}

impl Engine {
    /// Builds (or rebuilds, if their settings changed) the providers `spec` declares.
    pub fn configure_providers(&self, spec: &DeploymentSpec) -> Result<(), EngineError> {
        for p in spec.providers.values() {
            self.parts
                .providers
                .configure(
                    spec.name.as_str(),
                    p.name.as_str(),
                    p.kind.as_str(),
                    &settings_of(&p.settings),
                )
                .map_err(provider_error("providers"))?;
        }
        Ok(())
    }

    /// The provider `dep` calls `name`. One the deployment declared but this control plane
    /// has not built yet (it restarted) is built from the deployment's recorded file.
    pub(crate) fn provider(
        &self,
        dep: &str,
        name: &str,
    ) -> Result<Arc<dyn CloudProvider>, EngineError> {
        let registry = &self.parts.providers;
        if !registry.knows(dep, name)
            && let Some(row) = self.parts.store.deployment::<DeploymentState>(dep)?
            && let Ok(spec) = DeploymentSpec::from_str(&row.spec_toml, &row.spec_path)
        {
            self.configure_providers(&spec)?;
        }
        registry.get(dep, name).map_err(provider_error("providers"))
    }

    /// The provider `tier`'s servers come from.
    pub(crate) fn tier_provider(
        &self,
        spec: &DeploymentSpec,
        tier: &TierSpec,
    ) -> Result<Arc<dyn CloudProvider>, EngineError> {
        self.provider(spec.name.as_str(), tier.launch.provider.as_str())
    }

    /// Whether a stored server still exists, as its provider says; without a handle there is
    /// nothing of it to exist, and a provider that cannot be had cannot tell.
    pub(crate) async fn presence(&self, row: &ServerRow<AgentState>) -> Presence {
        let Some(handle) = handle_of(row) else {
            return Presence::Gone;
        };
        match self.provider(&row.deployment, &handle.provider) {
            Ok(provider) => provider.describe(&handle).await,
            Err(e) => Presence::Unknown(e.to_string()),
        }
    }

    /// The engine's view of a stored server; `None` for a row whose id is not a server id (the
    /// engine never writes one) or that has no handle (its launch never got an answer).
    pub(crate) fn server_of(
        &self,
        row: &ServerRow<AgentState>,
    ) -> Result<Option<Server>, EngineError> {
        let (Some(handle), Ok(id)) = (handle_of(row), row.id.parse()) else {
            return Ok(None);
        };
        let root = self
            .provider(&row.deployment, &handle.provider)?
            .root_of(&handle)
            .map_err(provider_error("providers"))?;
        Ok(Some(Server {
            id,
            name: row.name.clone(),
            tier: row.tier.clone(),
            address: row.address.clone(),
            root,
        }))
    }

    /// Records that `server`'s agent reconnected as process `pid`: when its provider must now
    /// watch that process, the new handle is stored. Says whether it changed.
    pub fn reattached(&self, dep: &str, server: &str, pid: u32) -> Result<bool, EngineError> {
        let store = &self.parts.store;
        let Some(handle) = store
            .server::<AgentState>(dep, server)?
            .as_ref()
            .and_then(handle_of)
        else {
            return Ok(false);
        };
        let provider = self.provider(dep, &handle.provider)?;
        let Some(new) = provider.reattached(&handle, pid) else {
            return Ok(false);
        };
        store.set_server_handle(dep, server, Some(&new.data))?;
        Ok(true)
    }

    /// Every distinct provider `spec`'s servers may be on: `local` and every one it declares.
    pub(crate) fn providers_of(
        &self,
        spec: &DeploymentSpec,
    ) -> Result<Vec<Arc<dyn CloudProvider>>, EngineError> {
        self.configure_providers(spec)?;
        Ok(self.parts.providers.all_of(spec.name.as_str()))
    }
}
