//! Rules of a tier's `[scaling]` table and of `metrics-interval`: thresholds in range with
//! each low under its high, periods that the kept window covers and that span at least two
//! metrics intervals, a whole increment, and something that can trigger a scale-up.

use toml::Spanned;

use super::Checker;
use super::manifest_file;
use crate::context::World;
use crate::metrics::{DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use crate::raw::RawScaling;
use crate::retry::parse_wait;
use crate::scaling::{
    DEFAULT_BREACH_MS, DEFAULT_COOLDOWN_MS, DEFAULT_SETTLE_MS, MAX_CPU_PERCENT, MAX_INCREMENT,
    MAX_PERIOD_MS, MAX_RAM_PERCENT, MAX_SETTLE_MS, MIN_PERIOD_MS, ScalingPolicy, Thresholds,
};
use crate::spec::{PackageKind, PackageRef};

impl Checker<'_> {
    /// `metrics-interval` of `[deployment]`, or the default.
    pub(super) fn metrics_interval(&mut self, raw: Option<&Spanned<String>>) -> u64 {
        let range = (MIN_INTERVAL_MS, MAX_INTERVAL_MS);
        self.wait_in(raw, "metrics-interval", range)
            .unwrap_or(DEFAULT_INTERVAL_MS)
    }

    pub(super) fn scaling(
        &mut self,
        raw: &Spanned<RawScaling>,
        min: u32,
        max: u32,
    ) -> Option<ScalingPolicy> {
        let r = raw.get_ref();
        let errors = self.errors.len();
        let thresholds = Thresholds {
            cpu_high: self.percent(r.cpu_high.as_ref(), "cpu-high", MAX_CPU_PERCENT),
            cpu_low: self.percent(r.cpu_low.as_ref(), "cpu-low", MAX_CPU_PERCENT),
            ram_high: self.percent(r.ram_high.as_ref(), "ram-high", MAX_RAM_PERCENT),
            ram_low: self.percent(r.ram_low.as_ref(), "ram-low", MAX_RAM_PERCENT),
        };
        self.low_under_high(
            r.cpu_low.as_ref(),
            thresholds.cpu_low,
            thresholds.cpu_high,
            "cpu",
        );
        self.low_under_high(
            r.ram_low.as_ref(),
            thresholds.ram_low,
            thresholds.ram_high,
            "ram",
        );
        let rule = r.rule.as_ref().and_then(|p| self.rule(p));
        if r.rule.is_none() && thresholds.cpu_high.is_none() && thresholds.ram_high.is_none() {
            self.error(
                raw.span(),
                "scaling has nothing to scale up on (expected `cpu-high`, `ram-high` or `rule`)",
            );
        }
        let period = (MIN_PERIOD_MS, MAX_PERIOD_MS);
        let breach = self.sustain(r.breach.as_ref(), "breach", period, DEFAULT_BREACH_MS);
        let cooldown = self.sustain(r.cooldown.as_ref(), "cooldown", period, DEFAULT_COOLDOWN_MS);
        let settle = self
            .wait_in(r.settle.as_ref(), "scaling settle", (0, MAX_SETTLE_MS))
            .unwrap_or(DEFAULT_SETTLE_MS);
        let increment = self.increment(r.increment.as_ref());
        if min == max {
            let msg = format!("scaling never acts: min and max are both {min}");
            let w = crate::error::SpecError::at(self.file, self.text, raw.span(), msg);
            self.warnings.push(w);
        }
        (self.errors.len() == errors).then_some(ScalingPolicy {
            thresholds,
            breach_ms: breach,
            cooldown_ms: cooldown,
            settle_ms: settle,
            increment,
            rule,
        })
    }

    /// A `rule` package: a directory (the control plane loads it from there) whose manifest
    /// declares the `scaler` world.
    fn rule(&mut self, raw: &Spanned<String>) -> Option<PackageRef> {
        let package = self.package(raw)?;
        if package.kind != PackageKind::Directory {
            let msg = format!(
                "rule `{}` is an archive: a scaling rule must be a package directory",
                raw.get_ref()
            );
            self.error(raw.span(), msg);
            return None;
        }
        let loaded = self
            .manifests
            .entry(package.path.resolved.clone())
            .or_insert_with(|| manifest_file::load(&package))
            .clone();
        let msg = match loaded {
            Ok(m) if m.manifest.plugin.world == World::Scaler => return Some(package),
            Ok(m) => format!(
                "{} declares world `{}`, but a scaling rule needs a `scaler` plugin",
                m.shown(&package),
                m.manifest.plugin.world
            ),
            Err(e) => format!("rule `{}` cannot be used: {e}", raw.get_ref()),
        };
        self.error(raw.span(), msg);
        None
    }

    fn percent(&mut self, raw: Option<&Spanned<i64>>, what: &str, max: u32) -> Option<u32> {
        let raw = raw?;
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                let msg = format!(
                    "{what} {} is out of range (expected 1 to {max})",
                    raw.get_ref()
                );
                self.error(raw.span(), msg);
                None
            }
        }
    }

    fn low_under_high(
        &mut self,
        raw: Option<&Spanned<i64>>,
        low: Option<u32>,
        high: Option<u32>,
        what: &str,
    ) {
        if let (Some(raw), Some(low), Some(high)) = (raw, low, high)
            && low >= high
        {
            let msg = format!("{what}-low ({low}) must be below {what}-high ({high})");
            self.error(raw.span(), msg);
        }
    }

    /// A sustain window: within `range`, and at least two metrics intervals long so that it
    /// always holds samples to judge.
    fn sustain(
        &mut self,
        raw: Option<&Spanned<String>>,
        what: &str,
        range: (u64, u64),
        default: u64,
    ) -> u64 {
        let Some(ms) = self.wait_in(raw, what, range) else {
            return default;
        };
        let least = self.metrics_interval_ms.saturating_mul(2);
        if let Some(raw) = raw
            && ms < least
        {
            let msg = format!(
                "{what} of {ms} ms is shorter than two metrics intervals ({least} ms): \
                 set a shorter `metrics-interval` in [deployment]"
            );
            self.error(raw.span(), msg);
        }
        ms
    }

    fn wait_in(
        &mut self,
        raw: Option<&Spanned<String>>,
        what: &str,
        range: (u64, u64),
    ) -> Option<u64> {
        let raw = raw?;
        match parse_wait(raw.get_ref()) {
            Ok(ms) if (range.0..=range.1).contains(&ms) => Some(ms),
            Ok(ms) => {
                let msg = format!(
                    "{what} of {ms} ms is out of range (expected {}ms to {}ms)",
                    range.0, range.1
                );
                self.error(raw.span(), msg);
                None
            }
            Err(e) => {
                self.error(raw.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    fn increment(&mut self, raw: Option<&Spanned<i64>>) -> u32 {
        let Some(raw) = raw else { return 1 };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (1..=MAX_INCREMENT).contains(&n) => n,
            _ => {
                let msg = format!(
                    "increment {} is out of range (expected 1 to {MAX_INCREMENT})",
                    raw.get_ref()
                );
                self.error(raw.span(), msg);
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{HEAD, in_temp_dir};
    use crate::scaling::ScalingPolicy;

    fn with_scaling(deployment: &str, scaling: &str) -> Result<Option<ScalingPolicy>, String> {
        let head = HEAD.replacen("[deployment]\n", &format!("[deployment]\n{deployment}"), 1);
        let text = format!(
            "{head}[tiers.t]\nmin = 1\nmax = 4\nservices = [\"a\"]\n{scaling}\n\
             [services.a]\npackage = \"pkg\"\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        result.map(|spec| spec.tiers.values().next().unwrap().scaling.clone())
    }

    #[test]
    fn a_scaling_table_gets_enstratus_defaults_for_what_it_leaves_out() {
        assert_eq!(with_scaling("", ""), Ok(None));
        let p = with_scaling("", "[tiers.t.scaling]\ncpu-high = 75\ncpu-low = 20")
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.thresholds.cpu_high, p.thresholds.cpu_low),
            (Some(75), Some(20))
        );
        assert_eq!(
            (p.breach_ms, p.cooldown_ms, p.settle_ms, p.increment),
            (120_000, 300_000, 60_000, 1)
        );
        let p = with_scaling(
            "metrics-interval = \"500ms\"\n",
            "[tiers.t.scaling]\nram-high = 80\nbreach = \"2s\"\ncooldown = \"3s\"\nsettle = \"0s\"\nincrement = 2",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.breach_ms, p.cooldown_ms, p.settle_ms, p.increment),
            (2_000, 3_000, 0, 2)
        );
    }

    #[test]
    fn bad_scaling_values_are_refused_where_they_are() {
        for (deployment, scaling, expected) in [
            (
                "",
                "cpu-high = 0",
                "cpu-high 0 is out of range (expected 1 to 1000)",
            ),
            (
                "",
                "ram-high = 101",
                "ram-high 101 is out of range (expected 1 to 100)",
            ),
            (
                "",
                "cpu-high = 50\ncpu-low = 50",
                "cpu-low (50) must be below cpu-high (50)",
            ),
            ("", "cpu-low = 20", "scaling has nothing to scale up on"),
            (
                "",
                "cpu-high = 75\nbreach = \"2s\"",
                "breach of 2000 ms is shorter than two metrics intervals (10000 ms)",
            ),
            (
                "",
                "cpu-high = 75\ncooldown = \"11m\"",
                "cooldown of 660000 ms is out of range (expected 1000ms to 600000ms)",
            ),
            (
                "",
                "cpu-high = 75\nsettle = \"soon\"",
                "scaling settle: invalid wait `soon`",
            ),
            (
                "",
                "cpu-high = 75\nincrement = 0",
                "increment 0 is out of range (expected 1 to 100)",
            ),
            ("", "rule = \"nowhere\"", "package `nowhere` does not exist"),
            ("", "cpu-hi = 75", "unknown field `cpu-hi`"),
            (
                "metrics-interval = \"100ms\"\n",
                "cpu-high = 75",
                "metrics-interval of 100 ms is out of range (expected 500ms to 300000ms)",
            ),
        ] {
            let err =
                with_scaling(deployment, &format!("[tiers.t.scaling]\n{scaling}")).unwrap_err();
            assert!(err.contains(expected), "{scaling}: {err}");
        }
    }

    #[test]
    fn a_rule_must_be_a_scaler_package_directory() {
        let dir = tempfile::tempdir().unwrap();
        for (name, world) in [("rule", "scaler"), ("svc", "service")] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            let manifest =
                format!("[plugin]\nname = \"{name}\"\nversion = \"1\"\nworld = \"{world}\"\n");
            std::fs::write(dir.path().join(name).join("plugin.toml"), manifest).unwrap();
        }
        std::fs::write(dir.path().join("rule.tgz"), "").unwrap();
        let spec = |rule: &str| {
            let text = format!(
                "{HEAD}[tiers.t]\nmin = 1\nmax = 4\nservices = [\"a\"]\n\
                 [tiers.t.scaling]\nrule = \"{rule}\"\n[services.a]\npackage = \"svc\"\n"
            );
            std::fs::write(dir.path().join("deploy.toml"), text).unwrap();
            crate::spec::DeploymentSpec::from_file(dir.path().join("deploy.toml"))
                .map_err(|e| e.to_string())
        };
        let ok = spec("rule").unwrap();
        let policy = ok.tiers.values().next().unwrap().scaling.clone().unwrap();
        assert!(policy.rule.unwrap().path.resolved.ends_with("rule"));
        for (rule, expected) in [
            (
                "svc",
                "svc/plugin.toml declares world `service`, but a scaling rule needs a `scaler` plugin",
            ),
            (
                "rule.tgz",
                "rule `rule.tgz` is an archive: a scaling rule must be a package directory",
            ),
            ("nowhere", "package `nowhere` does not exist"),
        ] {
            let err = spec(rule).unwrap_err();
            assert!(
                err.contains(expected) && err.contains("deploy.toml:8:"),
                "{rule}: {err}"
            );
        }
    }
}
