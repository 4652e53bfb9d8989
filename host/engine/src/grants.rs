//! Database access as dependents come and go. Each database server remembers, per dependent
//! service, the addresses it has granted; `grant-database-access` is called for exactly the
//! addresses not granted yet, and `revoke-database-access` for exactly those that leave (or
//! left while the database server was LOST). No call goes to a LOST database server.

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

    /// `grant-database-access` on every server of `db` whose agent answers, for the
    /// addresses of its data-source dependents that it has not granted yet; nothing is called
    /// when there are none. Grants of dependents that left while the server was LOST (their
    /// revoke skipped) are revoked first. A LOST server is skipped: when its agent is back a
    /// pass catches up, and its replacement is granted every address of the moment.
    pub(crate) async fn grant_access(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let wanted = self.grants_for(spec, fleet, db)?;
        let servers = self.answering(dep, fleet.get(db.tier.as_str()), |_| true)?;
        let stale = |service: &str, address: &str| left(&wanted, service, address);
        let stale = &stale;
        parallel::all(servers.iter().map(|server| {
            let wanted = wanted.clone();
            async move {
                self.revoke_on(spec, fleet, db, server, stale).await?;
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
    /// `leaving`) and whose agent answers, for exactly the granted addresses that
    /// `revoked(service, address)` picks. Works from what was granted, so a dependent no
    /// longer in the file is revoked too. A LOST server keeps its grants until it is back
    /// (then the next grant revokes those of dependents gone meanwhile) or replaced.
    pub(crate) async fn revoke_access(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
        leaving: &BTreeSet<String>,
        revoked: impl Fn(&str, &str) -> bool + Sync,
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let stays = |s: &Server| !leaving.contains(&s.address);
        let servers = self.answering(dep, fleet.get(db.tier.as_str()), stays)?;
        let revoked = &revoked;
        parallel::all(
            servers
                .iter()
                .map(|server| self.revoke_on(spec, fleet, db, server, revoked)),
        )
        .await?;
        Ok(())
    }

    /// The servers of `servers` that `keep` accepts and whose agent is not LOST.
    fn answering(
        &self,
        dep: &str,
        servers: Option<&Vec<Server>>,
        keep: impl Fn(&Server) -> bool,
    ) -> Result<Vec<Server>, EngineError> {
        let mut out = Vec::new();
        for server in servers.into_iter().flatten().filter(|s| keep(s)) {
            if !self.is_lost(dep, &server.id)? {
                out.push(server.clone());
            }
        }
        Ok(out)
    }

    /// `revoke-database-access` on one server of `db` for the granted addresses `revoked`
    /// picks; nothing is called when there are none.
    async fn revoke_on(
        &self,
        spec: &DeploymentSpec,
        fleet: &Fleet,
        db: &ServiceSpec,
        server: &Server,
        revoked: &(impl Fn(&str, &str) -> bool + Sync),
    ) -> Result<(), EngineError> {
        let dep = spec.name.as_str();
        let Some(ds) = &db.data_source else {
            return Ok(());
        };
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
    }
}

/// Whether `address`, granted for `service`, belongs to a dependent that left: the service
/// still depends on the database (`wanted` has its grant) but no server of it has the address.
fn left(wanted: &[DatabaseGrant], service: &str, address: &str) -> bool {
    let grant = wanted.iter().find(|g| g.service == service);
    grant.is_some_and(|g| !g.addresses.iter().any(|a| a == address))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(service: &str, addresses: &[&str]) -> DatabaseGrant {
        DatabaseGrant {
            service: service.into(),
            database: "hello".into(),
            user: "u".into(),
            password: "p".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn only_addresses_of_dependents_that_left_are_stale() {
        let wanted = [grant("app", &["10.0.0.3", "10.0.0.4"])];
        // app-1's address: it left while the database could not be told.
        assert!(left(&wanted, "app", "10.0.0.2"));
        assert!(!left(&wanted, "app", "10.0.0.3"));
        // A service no longer in the file is revoked when the file changes, not here.
        assert!(!left(&wanted, "old-app", "10.0.0.2"));
        // A dependent tier scaled to nothing has a grant without addresses: all of it left.
        assert!(left(&[grant("app", &[])], "app", "10.0.0.3"));
    }
}
