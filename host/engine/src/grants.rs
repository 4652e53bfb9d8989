//! Database access as dependents come and go. Each database server remembers, per dependent
//! service, the addresses it has granted; `grant-database-access` is called for exactly the
//! addresses not granted yet, and `revoke-database-access` for exactly those that leave.

use crate::engine::{Engine, EngineError};
use crate::facts::{Fleet, Server};
use crate::parallel;
use std::collections::{BTreeMap, BTreeSet};
use stratus_model::context::{DatabaseGrant, HookCall};
use stratus_model::spec::{DeploymentSpec, ServiceSpec};
use stratus_model::step_key::StepKey;

/// What one database server has granted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Granted {
    /// Grant and revoke calls made so far: each gets its own journal step, because the same
    /// addresses can be granted again after a revoke (a lease is reused).
    changes: u64,
    /// Addresses by dependent service.
    addresses: BTreeMap<String, BTreeSet<String>>,
}

impl Granted {
    fn has(&self, service: &str, address: &str) -> bool {
        self.addresses
            .get(service)
            .is_some_and(|s| s.contains(address))
    }

    /// The journal key of the next grant or revoke on `server`.
    fn step(&self, db: &ServiceSpec, server: &Server, hook: &'static str) -> StepKey {
        StepKey::service(&db.name, &server.id, hook).repeated(self.changes)
    }
}

impl Engine {
    fn granted_key(
        &self,
        dep: &str,
        db: &ServiceSpec,
        server: &Server,
    ) -> Result<String, EngineError> {
        Ok(format!(
            "granted/{}/{}/{}",
            self.journal_id(dep)?,
            db.name,
            server.id
        ))
    }

    fn granted(
        &self,
        dep: &str,
        db: &ServiceSpec,
        server: &Server,
    ) -> Result<Granted, EngineError> {
        let key = self.granted_key(dep, db, server)?;
        let text = self.parts.store.meta(&key)?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    fn set_granted(
        &self,
        dep: &str,
        db: &ServiceSpec,
        server: &Server,
        granted: &Granted,
    ) -> Result<(), EngineError> {
        let key = self.granted_key(dep, db, server)?;
        let json = serde_json::to_string(granted)
            .map_err(|e| EngineError::Other(format!("grants of {}: {e}", server.id)))?;
        self.parts.store.set_meta(&key, &json)?;
        Ok(())
    }

    /// `grant-database-access` on every server of `db` for the addresses of its data-source
    /// dependents that it has not granted yet; nothing is called when there are none.
    pub(crate) async fn grant_access(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let wanted = self.grants_for(spec, fleet, db)?;
        let servers = fleet.get(db.tier.as_str()).cloned().unwrap_or_default();
        parallel::all(servers.iter().map(|server| {
            let wanted = wanted.clone();
            async move {
                let mut granted = self.granted(dep, db, server)?;
                let new = only(&wanted, |g, a| !granted.has(&g.service, a));
                if new.is_empty() {
                    return Ok(());
                }
                let ctx = self.service_context(spec, fleet, db, server)?;
                let key = granted.step(db, server, "grant-database-access");
                let call = HookCall::GrantDatabaseAccess {
                    ctx,
                    grants: new.clone(),
                };
                self.service_hook(spec, db, server, &key, call).await?;
                for g in new {
                    granted
                        .addresses
                        .entry(g.service)
                        .or_default()
                        .extend(g.addresses);
                }
                granted.changes += 1;
                self.set_granted(dep, db, server, &granted)
            }
        }))
        .await?;
        Ok(())
    }

    /// `revoke-database-access` on every server of `db` that stays (its address is not
    /// `leaving`), for exactly the granted addresses that `revoked(service, address)` picks.
    /// Works from what was granted, so a dependent no longer in the file is revoked too.
    pub(crate) async fn revoke_access(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
        leaving: &BTreeSet<String>,
        revoked: impl Fn(&str, &str) -> bool + Sync,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let Some(ds) = &db.data_source else {
            return Ok(());
        };
        let servers: Vec<Server> = fleet
            .get(db.tier.as_str())
            .into_iter()
            .flatten()
            .filter(|s| !leaving.contains(&s.address))
            .cloned()
            .collect();
        let revoked = &revoked;
        parallel::all(servers.iter().map(|server| async move {
            let mut granted = self.granted(dep, db, server)?;
            let mut gone = Vec::new();
            for (service, addresses) in &granted.addresses {
                let addresses: Vec<String> = addresses
                    .iter()
                    .filter(|a| revoked(service, a))
                    .cloned()
                    .collect();
                if addresses.is_empty() {
                    continue;
                }
                let cred = self.grant_credential(spec, db.name.as_str(), service)?;
                gone.push(DatabaseGrant {
                    service: service.clone(),
                    database: ds.database.clone(),
                    user: cred.user,
                    password: cred.password,
                    addresses,
                });
            }
            if gone.is_empty() {
                return Ok(());
            }
            let ctx = self.service_context(spec, fleet, db, server)?;
            let key = granted.step(db, server, "revoke-database-access");
            let call = HookCall::RevokeDatabaseAccess {
                ctx,
                grants: gone.clone(),
            };
            self.service_hook(spec, db, server, &key, call).await?;
            for g in gone {
                if let Some(set) = granted.addresses.get_mut(&g.service) {
                    set.retain(|a| !g.addresses.contains(a));
                }
            }
            granted.addresses.retain(|_, set| !set.is_empty());
            granted.changes += 1;
            self.set_granted(dep, db, server, &granted)
        }))
        .await?;
        Ok(())
    }
}

/// `grants` with only the addresses `keep` accepts; grants left without one are dropped.
fn only(
    grants: &[DatabaseGrant],
    keep: impl Fn(&DatabaseGrant, &String) -> bool,
) -> Vec<DatabaseGrant> {
    grants
        .iter()
        .map(|g| DatabaseGrant {
            addresses: g.addresses.iter().filter(|a| keep(g, a)).cloned().collect(),
            ..g.clone()
        })
        .filter(|g| !g.addresses.is_empty())
        .collect()
}
