//! Rules between tiers and services: each service in exactly one tier, tiers that may start
//! empty, and no dependency cycles.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::{Checker, in_file_order};
use crate::graph;
use crate::raw::{RawFile, RawPort};

impl Checker<'_> {
    /// Which tier carries each service; reports services listed twice or in two tiers.
    pub(super) fn carriers(&mut self, raw: &RawFile) -> BTreeMap<String, String> {
        let mut carriers: BTreeMap<String, String> = BTreeMap::new();
        // In file order, so that the second mention of a service is the one reported.
        let mut listed: Vec<(&Spanned<String>, &Spanned<String>)> = raw
            .tiers
            .iter()
            .flat_map(|(k, t)| t.get_ref().services.iter().map(move |s| (k, s)))
            .collect();
        listed.sort_by_key(|(_, s)| s.span().start);
        for (tier, svc) in listed {
            let (tier, name) = (tier.get_ref(), svc.get_ref());
            if !raw.services.contains_key(name.as_str()) {
                self.error(
                    svc.span(),
                    format!("unknown service `{name}` (expected one of the [services.*] tables)"),
                );
            } else if let Some(other) = carriers.get(name) {
                let msg = if other == tier {
                    format!("service `{name}` is listed twice in tier `{tier}`")
                } else {
                    format!(
                        "service `{name}` is already carried by tier `{other}` (a service belongs to one tier)"
                    )
                };
                self.error(svc.span(), msg);
            } else {
                carriers.insert(name.clone(), tier.clone());
            }
        }
        carriers
    }

    /// A tier that may have no servers cannot carry what other tiers wait for; waiting within
    /// the tier is fine, since its dependents have no servers either.
    pub(super) fn empty_tiers_not_needed(
        &mut self,
        raw: &RawFile,
        carriers: &BTreeMap<String, String>,
    ) {
        for (tier, t) in &raw.tiers {
            let t = t.get_ref();
            if t.min.get_ref().0 != 0 {
                continue;
            }
            for svc in &t.services {
                let svc = svc.get_ref();
                let dependent = raw.services.iter().find(|(name, s)| {
                    let deps = &s.get_ref().depends_on;
                    carriers.get(name.get_ref()) != Some(tier.get_ref())
                        && deps.iter().any(|d| &d.get_ref().service == svc)
                });
                let balancer = raw.tiers.iter().find(|(_, o)| {
                    o.get_ref()
                        .balances
                        .as_ref()
                        .is_some_and(|b| b.get_ref() == svc)
                });
                let why = match (dependent, balancer) {
                    (Some((d, _)), _) => format!("`{}` depends on `{svc}`", d.get_ref()),
                    (None, Some((b, _))) => format!("tier `{}` balances `{svc}`", b.get_ref()),
                    (None, None) => continue,
                };
                let msg = format!(
                    "tier `{}` may have no servers (min = 0), but {why} (expected min >= 1)",
                    tier.get_ref()
                );
                self.error(t.min.span(), msg);
                break;
            }
        }
    }

    /// Dependencies, and load balancers on what they balance, must form a DAG.
    pub(super) fn acyclic(&mut self, raw: &RawFile) {
        // Each edge keeps the span of the value that created it, to point at the cycle.
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut spans: BTreeMap<(String, String), std::ops::Range<usize>> = BTreeMap::new();
        for (name, svc) in &raw.services {
            let entry = deps.entry(name.get_ref().clone()).or_default();
            for d in &svc.get_ref().depends_on {
                let target = &d.get_ref().service;
                if raw.services.contains_key(target.as_str()) {
                    entry.insert(target.clone());
                    let edge = (name.get_ref().clone(), target.clone());
                    spans.entry(edge).or_insert(d.span());
                }
            }
        }
        for tier in raw.tiers.values() {
            let tier = tier.get_ref();
            let Some(target) = &tier.balances else {
                continue;
            };
            if !raw.services.contains_key(target.get_ref().as_str()) {
                continue;
            }
            // A tier balancing its own service is reported by the tier rules, not as a cycle.
            for svc in tier
                .services
                .iter()
                .filter(|s| s.get_ref() != target.get_ref())
            {
                if let Some(entry) = deps.get_mut(svc.get_ref()) {
                    entry.insert(target.get_ref().clone());
                    let edge = (svc.get_ref().clone(), target.get_ref().clone());
                    spans.entry(edge).or_insert(target.span());
                }
            }
        }
        let Some(cycle) = graph::find_cycle(&deps) else {
            return;
        };
        let next = cycle.get(1).unwrap_or(&cycle[0]).clone();
        let span = spans[&(cycle[0].clone(), next)].clone();
        let mut path = cycle.clone();
        path.push(cycle[0].clone());
        self.error(span, format!("dependency cycle: {}", path.join(" -> ")));
    }

    /// Services of one tier share each server's address, so their private ports must differ.
    pub(super) fn tier_ports_distinct(&mut self, raw: &RawFile) {
        for (tier, t) in &raw.tiers {
            let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
            let mut done: BTreeSet<&str> = BTreeSet::new();
            for name in &t.get_ref().services {
                let name = name.get_ref().as_str();
                let Some(svc) = raw.services.get(name) else {
                    continue;
                };
                if !done.insert(name) {
                    continue;
                }
                for (_, port) in in_file_order(&svc.get_ref().ports) {
                    let (n, span) = match port.get_ref() {
                        RawPort::Number(n) => (*n, port.span()),
                        RawPort::Table(t) => (*t.private.get_ref(), t.private.span()),
                    };
                    match seen.get(&n) {
                        Some(other) if *other != name => {
                            let msg = format!(
                                "port {n} of `{name}` is also used by `{other}` on tier `{}` (services of a tier share each server's address)",
                                tier.get_ref()
                            );
                            self.error(span, msg);
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(n, name);
                        }
                    }
                }
            }
        }
    }
}
