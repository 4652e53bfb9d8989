//! The launch plan of a validated spec: the dependency DAG as topological layers, who grants
//! database access to whom, and which load balancers wait for which service.
//!
//! Edges are the explicit `depends-on` entries plus one implicit edge from every service of a
//! load-balancer tier to the service it balances, because `start-proxy` needs that service
//! RUNNING. Everything is sorted by name, so the same spec always gives the same plan.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::context::DependencyKind;
use crate::graph;
use crate::ids::{Name, ServiceId};
use crate::spec::{DependencySpec, DeploymentSpec, PortSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Launch order: a layer needs only services of earlier layers, so the services of one
    /// layer can be configured in parallel. Sorted by name within a layer.
    pub layers: Vec<Vec<Name>>,
    pub services: BTreeMap<Name, ServicePlan>,
    /// Load-balancer tiers, sorted by tier name.
    pub balancers: Vec<Balancer>,
}

/// One service's place in the DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: Name,
    pub id: ServiceId,
    pub tier: Name,
    /// Index into [`Plan::layers`].
    pub layer: usize,
    /// Its `depends-on` entries, in file order.
    pub dependencies: Vec<DependencySpec>,
    /// Services whose `depends-on` names it (`service` is the dependent), sorted by name.
    pub dependents: Vec<DependencySpec>,
    /// Dependents on its data source: `grant-database-access` runs for exactly these,
    /// sorted by name. Empty for anything but a database with dependents.
    pub grants: Vec<Name>,
    /// The service it waits for because its tier balances it.
    pub balances: Option<Name>,
    /// Services of load-balancer tiers that balance it, sorted by name.
    pub balanced_by: Vec<Name>,
}

/// A load-balancer tier: `start-proxy` runs on its services once `balanced` is RUNNING, with
/// the `balanced` servers as nodes on `port`; `remove-nodes` when they leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balancer {
    pub tier: Name,
    /// The load-balancer tier's services, in tier order.
    pub services: Vec<Name>,
    pub balanced: Name,
    pub balanced_tier: Name,
    pub port: PortSpec,
}

impl Plan {
    /// Plans a validated spec (validation guarantees known names and no cycle).
    pub fn new(spec: &DeploymentSpec) -> Plan {
        let mut services: BTreeMap<Name, ServicePlan> = spec
            .services
            .values()
            .map(|s| {
                let plan = ServicePlan {
                    name: s.name.clone(),
                    id: s.id,
                    tier: s.tier.clone(),
                    layer: 0,
                    dependencies: s.depends_on.clone(),
                    dependents: Vec::new(),
                    grants: Vec::new(),
                    balances: None,
                    balanced_by: Vec::new(),
                };
                (s.name.clone(), plan)
            })
            .collect();
        for s in spec.services.values() {
            for d in &s.depends_on {
                let target = services.get_mut(&d.service).expect("validated dependency");
                target.dependents.push(DependencySpec {
                    service: s.name.clone(),
                    kind: d.kind,
                });
                if d.kind == DependencyKind::DataSource {
                    target.grants.push(s.name.clone());
                }
            }
        }
        let mut balancers = Vec::new();
        for tier in spec.tiers.values() {
            let Some(b) = &tier.balances else { continue };
            let balanced = &spec.services[&b.service];
            for lb in &tier.services {
                services.get_mut(lb).expect("validated").balances = Some(b.service.clone());
                let target = services.get_mut(&b.service).expect("validated");
                target.balanced_by.push(lb.clone());
            }
            let port = balanced.ports.iter().find(|p| p.name == b.port);
            balancers.push(Balancer {
                tier: tier.name.clone(),
                services: tier.services.clone(),
                balanced: b.service.clone(),
                balanced_tier: balanced.tier.clone(),
                port: port.expect("validated balance port").clone(),
            });
        }
        for s in services.values_mut() {
            s.dependents.sort_by(|a, b| a.service.cmp(&b.service));
            s.grants.sort();
            s.balanced_by.sort();
        }
        let deps: BTreeMap<String, BTreeSet<String>> = services
            .values()
            .map(|s| {
                let explicit = s.dependencies.iter().map(|d| d.service.to_string());
                let implicit = s.balances.iter().map(|b| b.to_string());
                (s.name.to_string(), explicit.chain(implicit).collect())
            })
            .collect();
        let layers: Vec<Vec<Name>> = graph::layers(&deps)
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .map(|n| Name::new(n).expect("valid"))
                    .collect()
            })
            .collect();
        for (i, layer) in layers.iter().enumerate() {
            for n in layer {
                services.get_mut(n).expect("planned").layer = i;
            }
        }
        Plan {
            layers,
            services,
            balancers,
        }
    }

    /// Layers in launch order.
    pub fn launch_order(&self) -> &[Vec<Name>] {
        &self.layers
    }

    /// Layers in terminate order: dependents stop before what they depend on.
    pub fn terminate_order(&self) -> Vec<Vec<Name>> {
        self.layers.iter().rev().cloned().collect()
    }

    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.services.get(name)
    }

    /// Database services that grant access to dependents, by name.
    pub fn databases(&self) -> impl Iterator<Item = &ServicePlan> {
        self.services.values().filter(|s| !s.grants.is_empty())
    }

    /// The balancers of the tier, if it is a load-balancer tier.
    pub fn balancer(&self, tier: &str) -> Option<&Balancer> {
        self.balancers.iter().find(|b| b.tier.as_str() == tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Unit tests run in the crate directory, where the placeholder packages live.
    const SPEC: &str = r#"
        [deployment]
        name = "shop"
        [tiers.db]
        min = 1
        max = 1
        services = ["mysql", "cache"]
        [tiers.app]
        min = 2
        max = 4
        services = ["worker", "app"]
        [tiers.lb]
        min = 1
        max = 1
        services = ["haproxy"]
        balances = "app"
        balance-port = "http"
        [services.mysql]
        package = "plugins/mariadb"
        data-source = { image = "datasource.sql", database = "shop" }
        ports = { mysql = 3306 }
        [services.cache]
        package = "plugins/app"
        [services.app]
        package = "plugins/app"
        ports = { admin = 8081, http = 8080 }
        depends-on = [{ data-source = "mysql" }, "cache"]
        [services.worker]
        package = "plugins/app"
        depends-on = [{ service = "mysql" }]
        [services.haproxy]
        package = "plugins/haproxy"
        ports = { http = 80 }
    "#;

    fn plan() -> Plan {
        let spec = DeploymentSpec::from_str(SPEC, "tests/specs/good/inline.toml").unwrap();
        Plan::new(&spec)
    }

    fn names(v: &[Name]) -> Vec<&str> {
        v.iter().map(Name::as_str).collect()
    }

    #[test]
    fn layers_follow_dependencies_and_load_balancers() {
        let p = plan();
        let layers: Vec<Vec<&str>> = p.launch_order().iter().map(|l| names(l)).collect();
        assert_eq!(
            layers,
            vec![
                vec!["cache", "mysql"],
                vec!["app", "worker"],
                vec!["haproxy"]
            ]
        );
        let terminate = p.terminate_order();
        let reverse: Vec<Vec<&str>> = terminate.iter().map(|l| names(l)).collect();
        assert_eq!(
            reverse,
            vec![
                vec!["haproxy"],
                vec!["app", "worker"],
                vec!["cache", "mysql"]
            ]
        );
        assert_eq!(p.service("haproxy").unwrap().layer, 2);
    }

    #[test]
    fn databases_grant_only_data_source_dependents() {
        let p = plan();
        let mysql = p.service("mysql").unwrap();
        assert_eq!(names(&mysql.grants), ["app"]);
        let dependents: Vec<_> = mysql
            .dependents
            .iter()
            .map(|d| (d.service.as_str(), d.kind))
            .collect();
        assert_eq!(
            dependents,
            [
                ("app", DependencyKind::DataSource),
                ("worker", DependencyKind::Service)
            ]
        );
        let dbs: Vec<&str> = p.databases().map(|s| s.name.as_str()).collect();
        assert_eq!(dbs, ["mysql"]);
        assert!(p.service("cache").unwrap().grants.is_empty());
    }

    #[test]
    fn load_balancer_waits_for_the_balanced_service() {
        let p = plan();
        let b = p.balancer("lb").unwrap();
        assert_eq!(
            (b.balanced.as_str(), b.balanced_tier.as_str()),
            ("app", "app")
        );
        assert_eq!((b.port.name.as_str(), b.port.private), ("http", 8080));
        assert_eq!(names(&b.services), ["haproxy"]);
        let haproxy = p.service("haproxy").unwrap();
        assert_eq!(haproxy.balances.as_ref().map(Name::as_str), Some("app"));
        assert_eq!(names(&p.service("app").unwrap().balanced_by), ["haproxy"]);
        assert!(p.balancer("app").is_none());
    }

    #[test]
    fn plan_is_deterministic_and_serializes() {
        let (a, b) = (plan(), plan());
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), a);
    }
}
