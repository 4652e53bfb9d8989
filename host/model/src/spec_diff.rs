//! What changes between the deployment file a deployment runs and a new version of it, as
//! `stratus apply` shows it before reconciling, and the rule that keeps running services in
//! their directories: a service keeps its id across edits, a new one gets an unused id.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{Name, ServiceId};
use crate::spec::{DeploymentSpec, ServiceSpec, TierSpec};

/// One difference between two versions of a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    TierAdded(Name),
    TierRemoved(Name),
    /// `min..max` before and after.
    Bounds {
        tier: Name,
        from: (u32, u32),
        to: (u32, u32),
    },
    /// Launch configuration (provider, CM, personality), balancing, recovery or scaling changed.
    TierChanged {
        tier: Name,
        what: Vec<&'static str>,
    },
    ServiceAdded(Name),
    ServiceRemoved(Name),
    /// Which parts of the service changed: settings, ports, credentials, dependencies…
    ServiceChanged {
        service: Name,
        what: Vec<&'static str>,
    },
    /// The service moved to another tier.
    ServiceMoved {
        service: Name,
        from: Name,
        to: Name,
    },
    /// The package's (or data source image's) contents differ; the caller compares them,
    /// since the same path can hold new contents and a moved file the same ones.
    PackageChanged {
        service: Name,
        what: &'static str,
    },
    ProviderAdded(Name),
    ProviderRemoved(Name),
    /// A `[providers.NAME]` table's `type` or settings changed.
    ProviderChanged(Name),
}

impl Change {
    /// Changes `stratus apply` cannot make while the deployment runs; the reason says why.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Change::PackageChanged { service, what } => Some(format!(
                "the {what} of service {service} changed: rolling updates do not exist yet, \
                 so terminate and launch the deployment to change it"
            )),
            Change::ServiceMoved { service, from, to } => Some(format!(
                "service {service} moved from tier {from} to tier {to}: remove it in one \
                 apply and add it in another"
            )),
            Change::ProviderChanged(p) => Some(format!(
                "provider {p} changed: its servers were launched with the old settings and \
                 are ended through them, so terminate and launch the deployment to change it"
            )),
            Change::TierChanged { tier, what } if what.contains(&"launch") => Some(format!(
                "the launch configuration of tier {tier} changed: it applies to servers when \
                 they start, so scale the tier to 0 and back, or terminate and launch"
            )),
            _ => None,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::TierAdded(t) => write!(f, "+ tier {t}"),
            Change::TierRemoved(t) => write!(f, "- tier {t}"),
            Change::Bounds { tier, from, to } => write!(
                f,
                "~ tier {tier}: bounds {}..{} -> {}..{}",
                from.0, from.1, to.0, to.1
            ),
            Change::TierChanged { tier, what } => write!(f, "~ tier {tier}: {}", what.join(", ")),
            Change::ServiceAdded(s) => write!(f, "+ service {s}"),
            Change::ServiceRemoved(s) => write!(f, "- service {s}"),
            Change::ServiceChanged { service, what } => {
                write!(f, "~ service {service}: {}", what.join(", "))
            }
            Change::ServiceMoved { service, from, to } => {
                write!(f, "~ service {service}: tier {from} -> {to}")
            }
            Change::PackageChanged { service, what } => write!(f, "~ service {service}: {what}"),
            Change::ProviderAdded(p) => write!(f, "+ provider {p}"),
            Change::ProviderRemoved(p) => write!(f, "- provider {p}"),
            Change::ProviderChanged(p) => write!(f, "~ provider {p}"),
        }
    }
}

/// Every difference from `old` to `new`, tiers first, each list sorted by name.
pub fn diff(old: &DeploymentSpec, new: &DeploymentSpec) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, t) in &new.tiers {
        match old.tiers.get(name) {
            None => out.push(Change::TierAdded(name.clone())),
            Some(o) => out.extend(tier_changes(o, t)),
        }
    }
    for name in old.tiers.keys().filter(|n| !new.tiers.contains_key(*n)) {
        out.push(Change::TierRemoved(name.clone()));
    }
    for (name, s) in &new.services {
        match old.services.get(name) {
            None => out.push(Change::ServiceAdded(name.clone())),
            Some(o) => out.extend(service_changes(o, s)),
        }
    }
    for name in old
        .services
        .keys()
        .filter(|n| !new.services.contains_key(*n))
    {
        out.push(Change::ServiceRemoved(name.clone()));
    }
    out.extend(provider_changes(old, new));
    out
}

/// Provider tables added, removed (no tier can still name one: validation sees to it) or
/// changed.
fn provider_changes(old: &DeploymentSpec, new: &DeploymentSpec) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, p) in &new.providers {
        match old.providers.get(name) {
            None => out.push(Change::ProviderAdded(name.clone())),
            Some(o) if o != p => out.push(Change::ProviderChanged(name.clone())),
            Some(_) => {}
        }
    }
    for name in old
        .providers
        .keys()
        .filter(|n| !new.providers.contains_key(*n))
    {
        out.push(Change::ProviderRemoved(name.clone()));
    }
    out
}

fn tier_changes(old: &TierSpec, new: &TierSpec) -> Vec<Change> {
    let mut out = Vec::new();
    if (old.min, old.max) != (new.min, new.max) {
        out.push(Change::Bounds {
            tier: new.name.clone(),
            from: (old.min, old.max),
            to: (new.min, new.max),
        });
    }
    let mut what = Vec::new();
    if old.launch != new.launch {
        what.push("launch");
    }
    if old.balances != new.balances {
        what.push("balances");
    }
    if old.recovery != new.recovery {
        what.push("recovery");
    }
    if old.scaling != new.scaling {
        what.push("scaling");
    }
    if !what.is_empty() {
        out.push(Change::TierChanged {
            tier: new.name.clone(),
            what,
        });
    }
    out
}

fn service_changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<Change> {
    let service = new.name.clone();
    if old.tier != new.tier {
        return vec![Change::ServiceMoved {
            service,
            from: old.tier.clone(),
            to: new.tier.clone(),
        }];
    }
    let mut out = Vec::new();
    let database = |s: &ServiceSpec| s.data_source.as_ref().map(|d| d.database.clone());
    let mut what = Vec::new();
    for (part, changed) in [
        ("settings", old.settings != new.settings),
        ("ports", old.ports != new.ports),
        ("credentials", old.credentials != new.credentials),
        ("dependencies", old.depends_on != new.depends_on),
        ("database", database(old) != database(new)),
        ("capabilities", old.capabilities != new.capabilities),
        ("retry", old.retry != new.retry),
        ("health", old.health != new.health),
    ] {
        if changed {
            what.push(part);
        }
    }
    if !what.is_empty() {
        out.push(Change::ServiceChanged { service, what });
    }
    out
}

/// Gives the services of `new` that `running` has their running ids, and every other
/// service an id no service of either has, in name order: a directory never moves.
pub fn carry_ids(running: &DeploymentSpec, new: &mut DeploymentSpec) {
    let used = running
        .services
        .values()
        .chain(new.services.values())
        .map(|s| s.id.0)
        .max()
        .unwrap_or(ServiceId::FIRST - 1);
    let mut next = used + 1;
    let kept: BTreeMap<Name, ServiceId> = running
        .services
        .values()
        .map(|s| (s.name.clone(), s.id))
        .collect();
    for svc in new.services.values_mut() {
        svc.id = match kept.get(&svc.name) {
            Some(id) => *id,
            None => {
                next += 1;
                ServiceId(next - 1)
            }
        };
    }
}

/// The ids of `spec`'s services, to keep with the deployment.
pub fn ids_of(spec: &DeploymentSpec) -> BTreeMap<Name, ServiceId> {
    spec.services
        .values()
        .map(|s| (s.name.clone(), s.id))
        .collect()
}

/// Gives `spec`'s services the kept `ids` (others keep theirs).
pub fn with_ids(spec: &mut DeploymentSpec, ids: &BTreeMap<Name, ServiceId>) {
    for svc in spec.services.values_mut() {
        if let Some(id) = ids.get(&svc.name) {
            svc.id = *id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::{HEAD, in_temp_dir};

    const BASE: &str = "[tiers.t]\nmin = 1\nmax = 2\nservices = [\"b\", \"d\"]\n\
                        [services.b]\npackage = \"pkg\"\nsettings = { x = \"1\" }\n\
                        [services.d]\npackage = \"pkg\"\n";

    fn spec(body: &str) -> (tempfile::TempDir, DeploymentSpec) {
        let (dir, spec) = in_temp_dir(&format!("{HEAD}{body}"));
        (dir, spec.unwrap())
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let (_a, old) = spec(BASE);
        let (_b, new) = spec(BASE);
        assert_eq!(diff(&old, &new), []);
    }

    #[test]
    fn settings_bounds_and_added_services_are_listed() {
        let (_a, old) = spec(BASE);
        let body = BASE
            .replace("max = 2", "max = 5")
            .replace("x = \"1\"", "x = \"2\"")
            .replace("[\"b\", \"d\"]", "[\"a\", \"b\", \"d\"]")
            + "[services.a]\npackage = \"pkg\"\n";
        let (_b, new) = spec(&body);
        assert_eq!(
            lines(&diff(&old, &new)),
            [
                "~ tier t: bounds 1..2 -> 1..5",
                "+ service a",
                "~ service b: settings"
            ]
        );
        assert!(diff(&old, &new).iter().all(|c| c.refusal().is_none()));
    }

    #[test]
    fn a_changed_provider_table_is_refused_and_a_new_one_is_not() {
        let (_a, old) = spec(&format!("{BASE}[providers.here]\ntype = \"local\"\n"));
        let (_b, same) = spec(&format!("{BASE}[providers.here]\ntype = \"local\"\n"));
        assert_eq!(diff(&old, &same), []);
        let changed = Change::ProviderChanged(Name::new("here").unwrap());
        let why = changed.refusal().unwrap();
        assert!(why.starts_with("provider here changed"), "{why}");
        let (_c, more) = spec(&format!(
            "{BASE}[providers.here]\ntype = \"local\"\n[providers.also]\ntype = \"local\"\n"
        ));
        assert_eq!(lines(&diff(&old, &more)), ["+ provider also"]);
        assert_eq!(lines(&diff(&more, &old)), ["- provider also"]);
        assert!(diff(&old, &more).iter().all(|c| c.refusal().is_none()));
    }

    #[test]
    fn a_new_package_is_refused_until_rolling_updates_exist() {
        let change = Change::PackageChanged {
            service: Name::new("b").unwrap(),
            what: "package",
        };
        assert_eq!(change.to_string(), "~ service b: package");
        let why = change.refusal().unwrap();
        assert!(why.contains("rolling updates do not exist yet"), "{why}");
    }

    #[test]
    fn running_services_keep_their_ids_and_new_ones_get_unused_ones() {
        let (_a, old) = spec(BASE);
        let ids: Vec<u32> = old.services.values().map(|s| s.id.0).collect();
        assert_eq!(ids, [1000, 1001]);
        // `a` sorts first, so the file alone would move b and d to 1001 and 1002.
        let body = BASE.replace("[\"b\", \"d\"]", "[\"a\", \"b\", \"d\"]")
            + "[services.a]\npackage = \"pkg\"\n";
        let (_b, mut new) = spec(&body);
        carry_ids(&old, &mut new);
        let ids: Vec<(String, u32)> = new
            .services
            .values()
            .map(|s| (s.name.to_string(), s.id.0))
            .collect();
        assert_eq!(
            ids,
            [("a".into(), 1003), ("b".into(), 1000), ("d".into(), 1001)]
        );
    }
}
