//! Rules of a tier: bounds, launch configuration, and what a load-balancer tier balances.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Checker, in_file_order};
use crate::ids::Name;
use crate::plugin::capabilities::RunAs;
use crate::raw::{self, RawService, RawTier};
use crate::spec::*;

/// The most servers one tier may ask for (`min` and `max`): far beyond what one machine or a
/// small cloud account runs, low enough that a typo (`min = 100000000`) is an error in the
/// file rather than a launch that starts servers until something breaks.
pub const MAX_TIER_SERVERS: u32 = 10_000;

impl Checker<'_> {
    pub(super) fn tier(
        &mut self,
        key: &Spanned<String>,
        raw: &RawTier,
        services: &raw::SpannedMap<RawService>,
        carriers: &BTreeMap<String, String>,
        personalities: &raw::SpannedMap<raw::RawPersonality>,
    ) -> Option<TierSpec> {
        let name = self.name(key, "tier name:");
        let (min, max) = (raw.min.get_ref().0, raw.max.get_ref().0);
        for (what, n, span) in [("min", min, raw.min.span()), ("max", max, raw.max.span())] {
            if n > MAX_TIER_SERVERS {
                self.error(
                    span,
                    format!(
                        "{what} ({n}) is above the limit of {MAX_TIER_SERVERS} servers per tier"
                    ),
                );
            }
        }
        if max == 0 {
            self.error(raw.max.span(), "max must be at least 1");
        } else if min > max {
            self.error(
                raw.min.span(),
                format!("min ({min}) is greater than max ({max})"),
            );
        }
        let launch = raw.launch.as_ref();
        let provider = match launch.and_then(|l| l.provider.as_ref()) {
            Some(p) => self.name(p, "provider:"),
            None => Some(Name::new(DEFAULT_PROVIDER).expect("valid default")),
        };
        let cm = match launch.and_then(|l| l.cm.as_ref()) {
            Some(cm) => {
                let adapter = self.name(&cm.adapter, "cm adapter:");
                let package = self.package(&cm.package);
                let files = cm.files.as_ref().map(|f| self.directory(f, "cm files"));
                let settings = self.settings(&cm.settings);
                let run_as = cm.run_as.as_ref().map(|r| {
                    RunAs::try_from(r.get_ref().as_str()).map_err(|e| self.error(r.span(), e))
                });
                Some(CmSpec {
                    adapter: adapter?,
                    package: package?,
                    files: files.flatten(),
                    run_list: cm.run_list.clone(),
                    settings,
                    run_as: run_as.transpose().ok()?,
                })
            }
            None => None,
        };
        let personality = launch
            .and_then(|l| l.personality.as_ref())
            .and_then(|p| self.personality_ref(p, personalities));
        if let (Some(cm), Some(p)) = (launch.and_then(|l| l.cm.as_ref()), &personality) {
            self.unit_names_apart(&cm.adapter, p);
        }
        let balances = self.balances(key.get_ref(), raw, services, carriers);
        let recovery = self.recovery(raw);
        let scaling = raw.scaling.as_ref().and_then(|s| self.scaling(s, min, max));
        let services: Vec<Name> = raw
            .services
            .iter()
            .filter_map(|s| Name::new(s.get_ref().as_str()).ok())
            .collect();
        Some(TierSpec {
            name: name?,
            min,
            max,
            services,
            launch: LaunchConfig {
                provider: provider?,
                image: launch.and_then(|l| l.image.clone()),
                cm,
                personality,
                boot_timeout_ms: self.boot_timeout(launch),
            },
            balances,
            recovery,
            scaling,
        })
    }

    /// `boot-timeout = "5m"` of a launch block (1 s to 60 min).
    fn boot_timeout(&mut self, launch: Option<&raw::RawLaunch>) -> u64 {
        let Some(t) = launch.and_then(|l| l.boot_timeout.as_ref()) else {
            return DEFAULT_BOOT_TIMEOUT_MS;
        };
        match crate::retry::parse_wait(t.get_ref()) {
            Ok(ms) if BOOT_TIMEOUT_RANGE_MS.contains(&ms) => return ms,
            Ok(ms) => self.error(
                t.span(),
                format!("boot-timeout of {ms} ms is out of range (expected 1s to 60m)"),
            ),
            Err(e) => self.error(t.span(), format!("boot-timeout: {e}")),
        }
        DEFAULT_BOOT_TIMEOUT_MS
    }

    /// `recovery = "on" | "off"` and `recovery-grace = "10s"` (1 s to 10 min).
    fn recovery(&mut self, raw: &RawTier) -> RecoverySpec {
        let mut spec = RecoverySpec::default();
        if let Some(r) = &raw.recovery {
            match r.get_ref().as_str() {
                "on" => spec.enabled = true,
                "off" => spec.enabled = false,
                other => self.error(
                    r.span(),
                    format!("recovery `{other}` is not one of `on`, `off`"),
                ),
            }
        }
        if let Some(g) = &raw.recovery_grace {
            match crate::retry::parse_wait(g.get_ref()) {
                Ok(ms) if (1_000..=600_000).contains(&ms) => spec.grace_ms = ms,
                Ok(ms) => self.error(
                    g.span(),
                    format!("recovery-grace of {ms} ms is out of range (expected 1s to 10m)"),
                ),
                Err(e) => self.error(g.span(), format!("recovery-grace: {e}")),
            }
        }
        spec
    }

    fn balances(
        &mut self,
        tier: &str,
        raw: &RawTier,
        services: &raw::SpannedMap<RawService>,
        carriers: &BTreeMap<String, String>,
    ) -> Option<BalanceSpec> {
        let Some(target) = &raw.balances else {
            if let Some(port) = &raw.balance_port {
                self.error(
                    port.span(),
                    "balance-port without `balances` (expected `balances = \"<service>\"` too)",
                );
            }
            return None;
        };
        let name = target.get_ref();
        let Some((_, svc)) = services.get_key_value(name.as_str()) else {
            self.error(
                target.span(),
                format!("tier `{tier}` balances unknown service `{name}`"),
            );
            return None;
        };
        match carriers.get(name) {
            Some(t) if t == tier => {
                self.error(target.span(), format!("tier `{tier}` balances its own service `{name}` (expected a service of another tier)"));
                return None;
            }
            None => return None, // already reported as carried by no tier
            Some(_) => {}
        }
        let mut ports = in_file_order(&svc.get_ref().ports);
        if ports.is_empty() {
            self.error(target.span(), format!("tier `{tier}` balances `{name}`, which has no ports (expected a service with `ports`)"));
            return None;
        }
        let port = match &raw.balance_port {
            Some(p) => match ports.iter().position(|(k, _)| k.get_ref() == p.get_ref()) {
                Some(i) => ports.swap_remove(i).0,
                None => {
                    let known: Vec<_> = ports
                        .iter()
                        .map(|(k, _)| format!("`{}`", k.get_ref()))
                        .collect();
                    self.error(
                        p.span(),
                        format!(
                            "`{name}` has no port `{}` (expected one of {})",
                            p.get_ref(),
                            known.join(", ")
                        ),
                    );
                    return None;
                }
            },
            None => ports.swap_remove(0).0,
        };
        Some(BalanceSpec {
            service: Name::new(name.as_str()).ok()?,
            port: Name::new(port.get_ref().as_str()).ok()?,
        })
    }
}

impl Checker<'_> {
    /// A CM unit's work directory is named after it: the adapter's name, then
    /// `<personality>-<n>` for the personality's n-th component. An adapter named like a
    /// component would share that directory (and its credential) with a unit that runs as
    /// the program user.
    fn unit_names_apart(&mut self, adapter: &Spanned<String>, personality: &Name) {
        let component = adapter
            .get_ref()
            .strip_prefix(personality.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if let Some(n) = component {
            self.error(
                adapter.span(),
                format!(
                    "cm adapter `{}` would share its work directory with component {n} of \
                     this tier's personality `{personality}`: name the adapter otherwise",
                    adapter.get_ref()
                ),
            );
        }
    }

    /// A tier's `personality` must name a `[personalities.<name>]` table.
    fn personality_ref(
        &mut self,
        p: &Spanned<String>,
        personalities: &raw::SpannedMap<raw::RawPersonality>,
    ) -> Option<Name> {
        let name = self.name(p, "personality:")?;
        if !personalities.keys().any(|k| k.get_ref() == p.get_ref()) {
            let known: Vec<&str> = personalities.keys().map(|k| k.get_ref().as_str()).collect();
            self.error(
                p.span(),
                format!(
                    "unknown personality `{}`: expected one of the [personalities.<name>] tables ({})",
                    p.get_ref(),
                    if known.is_empty() { "none defined".to_string() } else { known.join(", ") }
                ),
            );
            return None;
        }
        Some(name)
    }

    /// Script personalities: every component must be a package.
    pub(super) fn personalities(
        &mut self,
        raw: &raw::SpannedMap<raw::RawPersonality>,
    ) -> BTreeMap<Name, PersonalitySpec> {
        let mut out = BTreeMap::new();
        for (key, p) in in_file_order(raw) {
            let name = self.name(key, "personality name:");
            if p.get_ref().components.is_empty() {
                self.error(key.span(), "a personality needs at least one component");
            }
            let components: Vec<Option<PackageRef>> = p
                .get_ref()
                .components
                .iter()
                .map(|c| self.package(c))
                .collect();
            if let (Some(name), Some(components)) =
                (name, components.into_iter().collect::<Option<Vec<_>>>())
            {
                out.insert(name.clone(), PersonalitySpec { name, components });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{HEAD, in_temp_dir};
    use crate::spec::{LaunchConfig, RecoverySpec};

    fn with_recovery(keys: &str) -> Result<RecoverySpec, String> {
        let text = format!(
            "{HEAD}[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n{keys}\n\
             [services.a]\npackage = \"pkg\"\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        result.map(|spec| spec.tiers.values().next().unwrap().recovery)
    }

    #[test]
    fn recovery_is_on_after_ten_seconds_unless_the_tier_says_otherwise() {
        assert_eq!(with_recovery(""), Ok(RecoverySpec::default()));
        let r = with_recovery("recovery = \"off\"\nrecovery-grace = \"3s\"").unwrap();
        assert_eq!((r.enabled, r.grace_ms), (false, 3_000));
    }

    #[test]
    fn bad_recovery_values_are_refused_where_they_are() {
        for (keys, expected) in [
            (
                "recovery = \"maybe\"",
                "recovery `maybe` is not one of `on`, `off`",
            ),
            (
                "recovery-grace = \"10ms\"",
                "recovery-grace of 10 ms is out of range",
            ),
            (
                "recovery-grace = \"10\"",
                "recovery-grace: invalid wait `10`",
            ),
        ] {
            let err = with_recovery(keys).unwrap_err();
            assert!(err.contains(expected), "{keys}: {err}");
        }
    }

    /// The launch block of a one-tier file with `keys` in it.
    fn with_launch(keys: &str) -> Result<LaunchConfig, String> {
        let text = format!(
            "{HEAD}[tiers.web]\nmin = 1\nmax = 1\nservices = [\"a\"]\n[tiers.web.launch]\n{keys}\n\
             [services.a]\npackage = \"pkg\"\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        result.map(|spec| spec.tiers.values().next().unwrap().launch.clone())
    }

    #[test]
    fn boot_timeout_is_a_minute_unless_the_launch_block_says_otherwise() {
        assert_eq!(with_launch("").unwrap().boot_timeout_ms, 60_000);
        assert_eq!(
            with_launch("boot-timeout = \"5m\"")
                .unwrap()
                .boot_timeout_ms,
            300_000
        );
        for (keys, expected) in [
            (
                "boot-timeout = \"500ms\"",
                "8:16: boot-timeout of 500 ms is out of range (expected 1s to 60m)",
            ),
            (
                "boot-timeout = \"61m\"",
                "boot-timeout of 3660000 ms is out of range",
            ),
            (
                "boot-timeout = \"soon\"",
                "boot-timeout: invalid wait `soon`",
            ),
        ] {
            let err = with_launch(keys).unwrap_err();
            assert!(err.contains(expected), "{keys}: {err}");
        }
    }
}
