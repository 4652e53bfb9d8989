//! Providers by name. `local` is built in and the default; a deployment's `[providers.NAME]`
//! tables name further ones, each built by the factory of its `type` with its settings. A
//! name belongs to the deployment that declares it: two deployments may each have a `here`.

use crate::{CloudProvider, LocalProvider, ProviderError, ProviderHandle, ProviderSettings};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The name (and `type`) of the built-in provider, which every deployment may use without
/// declaring it and which tiers naming no provider use.
pub const LOCAL: &str = "local";

/// Builds providers of one `type` from a `[providers.NAME]` table's settings. The cloud-driver
/// adapter and the SSH provider register one each.
pub trait ProviderFactory: Send + Sync {
    /// The `type` it answers to.
    fn kind(&self) -> &str;

    /// A provider called `name` with `settings`; bad settings are an error naming the setting.
    fn create(
        &self,
        name: &str,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError>;
}

/// A provider a deployment declared, with what it was built from (to rebuild on a change).
struct Configured {
    kind: String,
    settings: ProviderSettings,
    provider: Arc<dyn CloudProvider>,
}

/// Name → provider, per deployment, over the built-in `local`.
pub struct ProviderRegistry {
    local: Arc<dyn CloudProvider>,
    factories: BTreeMap<String, Arc<dyn ProviderFactory>>,
    configured: Mutex<HashMap<(String, String), Configured>>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

impl ProviderRegistry {
    /// A registry whose `local` (provider and `type`) is `local`.
    pub fn new(local: Arc<LocalProvider>) -> ProviderRegistry {
        let mut registry = ProviderRegistry {
            local: local.clone(),
            factories: BTreeMap::new(),
            configured: Mutex::default(),
        };
        registry.add_factory(Arc::new(LocalFactory(local)));
        registry
    }

    /// Makes `type = factory.kind()` available to `[providers.NAME]` tables.
    pub fn add_factory(&mut self, factory: Arc<dyn ProviderFactory>) {
        self.factories.insert(factory.kind().to_string(), factory);
    }

    /// The `type`s tables may name, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// The built-in local provider.
    pub fn local(&self) -> Arc<dyn CloudProvider> {
        self.local.clone()
    }

    /// Declares (or redeclares with new settings) `deployment`'s provider `name`. A provider
    /// the deployment no longer declares stays known, so that its servers can still end.
    pub fn configure(
        &self,
        deployment: &str,
        name: &str,
        kind: &str,
        settings: &ProviderSettings,
    ) -> Result<(), ProviderError> {
        if name == LOCAL {
            return Err(ProviderError::Settings {
                provider: name.to_string(),
                message: "`local` is the built-in provider; give yours another name".into(),
            });
        }
        let key = (deployment.to_string(), name.to_string());
        let mut configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        if configured
            .get(&key)
            .is_some_and(|c| c.kind == kind && &c.settings == settings)
        {
            return Ok(());
        }
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| ProviderError::NoFactory {
                provider: name.to_string(),
                kind: kind.to_string(),
                known: self.kinds().join(", "),
            })?;
        let provider = factory.create(name, settings)?;
        configured.insert(
            key,
            Configured {
                kind: kind.to_string(),
                settings: settings.clone(),
                provider,
            },
        );
        Ok(())
    }

    /// Whether `deployment` declared `name` (the built-in `local` always counts).
    pub fn knows(&self, deployment: &str, name: &str) -> bool {
        name == LOCAL
            || self
                .configured
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&(deployment.to_string(), name.to_string()))
    }

    /// The provider `deployment` calls `name`.
    pub fn get(
        &self,
        deployment: &str,
        name: &str,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        if name == LOCAL {
            return Ok(self.local.clone());
        }
        let configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        configured
            .get(&(deployment.to_string(), name.to_string()))
            .map(|c| c.provider.clone())
            .ok_or_else(|| ProviderError::Unknown {
                provider: name.to_string(),
                deployment: deployment.to_string(),
            })
    }

    /// The provider that launched the server of `deployment` with `handle`.
    pub fn of(
        &self,
        deployment: &str,
        handle: &ProviderHandle,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        self.get(deployment, &handle.provider)
    }

    /// Every distinct provider `deployment` may have servers on: `local` and those it declared
    /// (one provider under two names counts once).
    pub fn all_of(&self, deployment: &str) -> Vec<Arc<dyn CloudProvider>> {
        let configured = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![self.local.clone()];
        for ((dep, _), c) in configured.iter() {
            if dep == deployment && !out.iter().any(|p| same(p, &c.provider)) {
                out.push(c.provider.clone());
            }
        }
        out
    }
}

/// Whether two handles point at one provider (its data, whatever the vtable).
pub fn same(a: &Arc<dyn CloudProvider>, b: &Arc<dyn CloudProvider>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// `type = "local"`: the one local provider (its leases and state are the state directory's),
/// under another name. It takes no settings.
struct LocalFactory(Arc<LocalProvider>);

impl ProviderFactory for LocalFactory {
    fn kind(&self) -> &str {
        LOCAL
    }

    fn create(
        &self,
        name: &str,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        if let Some(key) = settings.keys().next() {
            return Err(ProviderError::Settings {
                provider: name.to_string(),
                message: format!("the local provider takes no settings (found `{key}`)"),
            });
        }
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Presence, SettingValue};

    fn registry(dir: &std::path::Path) -> (ProviderRegistry, Arc<LocalProvider>) {
        let local = Arc::new(LocalProvider::new(dir.join("state"), dir.join("agent")));
        (ProviderRegistry::new(local.clone()), local)
    }

    fn as_dyn(p: Arc<LocalProvider>) -> Arc<dyn CloudProvider> {
        p
    }

    #[test]
    fn local_is_always_there_and_other_names_only_once_declared() {
        let dir = tempfile::tempdir().unwrap();
        let (r, local) = registry(dir.path());
        assert!(same(&r.get("shop", LOCAL).unwrap(), &as_dyn(local.clone())));
        let e = r.get("shop", "here").err().unwrap().to_string();
        assert!(e.contains("`here`") && e.contains("shop"), "{e}");
        r.configure("shop", "here", "local", &ProviderSettings::new())
            .unwrap();
        // The same local provider under another name: one set of leases.
        assert!(same(&r.get("shop", "here").unwrap(), &as_dyn(local)));
        assert!(r.knows("shop", "here") && !r.knows("blog", "here"));
        assert_eq!(
            r.all_of("shop").len(),
            1,
            "local under two names is one provider"
        );
    }

    #[test]
    fn names_belong_to_their_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = registry(dir.path());
        r.configure("shop", "here", "local", &ProviderSettings::new())
            .unwrap();
        assert!(r.get("blog", "here").is_err());
    }

    #[test]
    fn bad_tables_are_refused_with_the_provider_named() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = registry(dir.path());
        let none = ProviderSettings::new();
        let e = r.configure("shop", "far", "ssh", &none).unwrap_err();
        assert_eq!(
            e.to_string(),
            "provider `far`: there is no provider type `ssh` (known: local)"
        );
        let e = r.configure("shop", LOCAL, "local", &none).unwrap_err();
        assert!(e.to_string().contains("built-in"), "{e}");
        let settings =
            ProviderSettings::from([("hosts".to_string(), SettingValue::List(vec!["a".into()]))]);
        let e = r.configure("shop", "here", "local", &settings).unwrap_err();
        assert!(e.to_string().contains("`hosts`"), "{e}");
        assert!(!r.knows("shop", "here"), "a refused table declares nothing");
    }

    /// What `describe` answers for the local provider: a record it cannot read is `Unknown`
    /// (never taken for gone), a group that is not running is `Gone`.
    #[tokio::test]
    async fn describe_tells_gone_from_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (r, _) = registry(dir.path());
        let local = r.get("shop", LOCAL).unwrap();
        let ended = crate::LocalHandle {
            root: dir.path().join("state/servers/shop/app-1/root"),
            pid: 0,
        };
        assert_eq!(
            local.describe(&ended.to_handle(LOCAL)).await,
            Presence::Gone
        );
        let unreadable = ProviderHandle {
            provider: LOCAL.into(),
            data: serde_json::json!({ "instance": "i-0123" }),
        };
        match local.describe(&unreadable).await {
            Presence::Unknown(reason) => assert!(reason.contains("`local`"), "{reason}"),
            other => panic!("an unreadable handle is not {other:?}"),
        }
        let stranger = ProviderHandle {
            provider: "gone-away".into(),
            data: serde_json::Value::Null,
        };
        assert!(r.of("shop", &stranger).is_err());
    }

    /// A factory registered later (as the cloud-driver adapter does) builds from its settings,
    /// and again only when they change.
    #[test]
    fn a_registered_factory_builds_providers_from_settings() {
        struct Counting(std::sync::atomic::AtomicUsize, Arc<LocalProvider>);
        impl ProviderFactory for Counting {
            fn kind(&self) -> &str {
                "counting"
            }
            fn create(
                &self,
                _: &str,
                _: &ProviderSettings,
            ) -> Result<Arc<dyn CloudProvider>, ProviderError> {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(self.1.clone())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut r, local) = registry(dir.path());
        let factory = Arc::new(Counting(Default::default(), local));
        r.add_factory(factory.clone());
        assert_eq!(r.kinds(), ["counting", "local"]);
        let a = ProviderSettings::from([("endpoint".into(), SettingValue::Text("x".into()))]);
        let b = ProviderSettings::from([("endpoint".into(), SettingValue::Text("y".into()))]);
        for settings in [&a, &a, &b] {
            r.configure("shop", "edge", "counting", settings).unwrap();
        }
        assert_eq!(factory.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        let handle = ProviderHandle {
            provider: "edge".into(),
            data: serde_json::Value::Null,
        };
        assert!(r.of("shop", &handle).is_ok());
    }
}
