//! The rules of a deployment file: raw TOML shapes (`raw.rs`) in, a [`DeploymentSpec`] or
//! every problem found out. Each check reports at the span of the value it judges.

mod component;
mod control_plane;
mod health;
mod manifest_file;
mod plugins;
mod providers;
mod relations;
mod retry;
mod scaling;
mod service;
mod tier;
pub use control_plane::{control_plane_providers, with_control_plane_providers};
pub use providers::{MAX_PROVIDER_SETTING_BYTES, MAX_PROVIDER_SETTINGS};
pub use tier::MAX_TIER_SERVERS;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::error::{SpecError, SpecErrors};
use crate::ids::{Name, ServiceId};
use crate::raw::{RawFile, Setting};
use crate::spec::{DeploymentSpec, PackageKind, PackageRef, SpecPath};

/// Parses and validates `text`, naming `file` in messages.
pub(crate) fn parse(text: &str, file: &Path) -> Result<DeploymentSpec, SpecErrors> {
    check(text, file, false).map(|(spec, _)| spec)
}

/// Parses and validates `text` for launching it: also checks every package it names against
/// its manifest (`plugins.rs`). Returns the spec and the warnings.
fn check(
    text: &str,
    file: &Path,
    with_plugins: bool,
) -> Result<(DeploymentSpec, Vec<SpecError>), SpecErrors> {
    let raw: RawFile = toml::from_str(text).map_err(|e| SpecError::from_toml(file, text, &e))?;
    let base_dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut c = Checker {
        file,
        text,
        base_dir,
        errors: Vec::new(),
        warnings: Vec::new(),
        manifests: plugins::Manifests::new(),
        metrics_interval_ms: crate::metrics::DEFAULT_INTERVAL_MS,
    };
    let spec = c.deployment(&raw);
    if with_plugins && let Some(spec) = &spec {
        c.plugins(&raw, spec);
    }
    match spec {
        Some(spec) if c.errors.is_empty() => {
            Ok((spec, SpecErrors::sorted(c.warnings).into_iter().collect()))
        }
        _ => Err(SpecErrors::sorted(c.errors)),
    }
}

impl DeploymentSpec {
    /// Reads and validates a deployment file about to be launched: the checks of
    /// [`DeploymentSpec::from_file`], and every package it names held against its manifest
    /// (world, narrowing, programs). Returns the spec and located warnings (messages starting
    /// with `warning:`), such as programs known to run arbitrary code.
    pub fn from_file_for_launch(
        path: impl AsRef<Path>,
    ) -> Result<(DeploymentSpec, Vec<SpecError>), SpecErrors> {
        let path = path.as_ref();
        Self::from_str_for_launch(&crate::spec::read_file(path)?, path)
    }

    /// [`DeploymentSpec::from_file_for_launch`] of `text`; `path` names it and anchors paths.
    pub fn from_str_for_launch(
        text: &str,
        path: impl AsRef<Path>,
    ) -> Result<(DeploymentSpec, Vec<SpecError>), SpecErrors> {
        check(text, path.as_ref(), true)
    }
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    base_dir: PathBuf,
    errors: Vec<SpecError>,
    /// Located like errors; they do not refuse the file.
    warnings: Vec<SpecError>,
    manifests: plugins::Manifests,
    /// The file's metrics interval, which scaling periods are checked against.
    metrics_interval_ms: u64,
}

/// Entries of a TOML table in file order (`toml` hands them over sorted by key).
fn in_file_order<T>(map: &BTreeMap<Spanned<String>, T>) -> Vec<(&Spanned<String>, &T)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let e = SpecError::at(self.file, self.text, span, message);
        self.errors.push(e);
    }

    fn name(&mut self, s: &Spanned<String>, what: &str) -> Option<Name> {
        match Name::new(s.get_ref().as_str()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(s.span(), format!("{what} {e}"));
                None
            }
        }
    }

    /// `written` resolved against the file's directory; reports it if it does not exist.
    fn path(&mut self, s: &Spanned<String>, what: &str, expected: &str) -> Option<SpecPath> {
        let written = PathBuf::from(s.get_ref());
        let resolved = self.base_dir.join(&written);
        if s.get_ref().is_empty() || !resolved.exists() {
            let msg = format!(
                "{what} `{}` does not exist (expected {expected}, relative to the deployment file)",
                s.get_ref()
            );
            self.error(s.span(), msg);
            return None;
        }
        Some(SpecPath { written, resolved })
    }

    fn package(&mut self, s: &Spanned<String>) -> Option<PackageRef> {
        const EXPECTED: &str = "a directory or a .tar / .tar.gz archive";
        let path = self.path(s, "package", EXPECTED)?;
        let archive = [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|ext| s.get_ref().ends_with(ext));
        let kind = if path.resolved.is_dir() {
            PackageKind::Directory
        } else if archive {
            PackageKind::Archive
        } else {
            self.error(
                s.span(),
                format!("package `{}` is a file: expected {EXPECTED}", s.get_ref()),
            );
            return None;
        };
        Some(PackageRef { path, kind })
    }

    fn settings(&mut self, raw: &BTreeMap<Spanned<String>, Setting>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            // Keys become `key=value` lines of enstratus.cfg.
            let k = key.get_ref();
            if k.is_empty()
                || k.chars()
                    .any(|c| c.is_whitespace() || c == '=' || c.is_control())
            {
                self.error(
                    key.span(),
                    format!(
                        "invalid setting name `{k}`: expected no spaces, `=` or control characters"
                    ),
                );
            }
            out.insert(k.clone(), value.0.clone());
        }
        out
    }

    fn deployment(&mut self, raw: &RawFile) -> Option<DeploymentSpec> {
        let name = self.name(&raw.deployment.name, "deployment name:");
        if raw.tiers.is_empty() {
            let msg = "a deployment needs servers (expected at least one [tiers.<name>] table)";
            self.error(raw.deployment.name.span(), msg);
        }
        let ids: BTreeMap<String, ServiceId> = raw
            .services
            .keys()
            .enumerate()
            .map(|(i, k)| (k.get_ref().clone(), ServiceId::assign(i)))
            .collect();
        let carriers = self.carriers(raw);
        let mut services = BTreeMap::new();
        for (key, svc) in &raw.services {
            let tier = carriers.get(key.get_ref()).cloned();
            if tier.is_none() {
                self.error(
                    key.span(),
                    format!(
                        "service `{}` is carried by no tier (expected it in one tier's `services`)",
                        key.get_ref()
                    ),
                );
            }
            let id = ids[key.get_ref()];
            if let Some(s) = self.service(key, svc.get_ref(), id, tier, &raw.services) {
                services.insert(s.name.clone(), s);
            }
        }
        self.metrics_interval_ms = self.metrics_interval(raw.deployment.metrics_interval.as_ref());
        let mut tiers = BTreeMap::new();
        for (key, tier) in &raw.tiers {
            if let Some(t) = self.tier(
                key,
                tier.get_ref(),
                &raw.services,
                &carriers,
                &raw.personalities,
            ) {
                tiers.insert(t.name.clone(), t);
            }
        }
        let personalities = self.personalities(&raw.personalities);
        let providers = self.providers(&raw.providers);
        self.tier_providers(raw);
        self.empty_tiers_not_needed(raw, &carriers);
        self.tier_ports_distinct(raw);
        self.acyclic(raw);
        Some(DeploymentSpec {
            name: name?,
            description: raw.deployment.description.clone(),
            file: self.file.to_path_buf(),
            base_dir: self.base_dir.clone(),
            tiers,
            services,
            personalities,
            providers,
            metrics_interval_ms: self.metrics_interval_ms,
        })
    }

    /// A path that must be an existing directory.
    fn directory(&mut self, s: &Spanned<String>, what: &str) -> Option<SpecPath> {
        let path = self.path(s, what, "a directory")?;
        if !path.resolved.is_dir() {
            self.error(
                s.span(),
                format!("{what} `{}` is not a directory", s.get_ref()),
            );
            return None;
        }
        Some(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use crate::context::DependencyKind;
    use crate::spec::{DeploymentSpec, PackageKind};

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// A spec whose packages live in a fresh temporary directory.
    pub(crate) fn in_temp_dir(spec: &str) -> (tempfile::TempDir, Result<DeploymentSpec, String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        write(
            dir.path(),
            "pkg.tar.gz",
            "not really gzip; only the name matters here",
        );
        write(dir.path(), "db.sql", "");
        write(dir.path(), "deploy.toml", spec);
        let result = DeploymentSpec::from_file(dir.path().join("deploy.toml"));
        (dir, result.map_err(|e| e.to_string()))
    }

    pub(crate) const HEAD: &str = "[deployment]\nname = \"d\"\n";

    #[test]
    fn dependency_forms_and_package_kinds() {
        let spec = format!(
            "{HEAD}[tiers.t]\nmin = 0\nmax = 2\nservices = [\"a\", \"b\", \"c\", \"db\"]\n\
             [services.a]\npackage = \"pkg\"\ndepends-on = [\"b\", {{ service = \"c\" }}, {{ data-source = \"db\" }}]\n\
             [services.b]\npackage = \"pkg.tar.gz\"\n\
             [services.c]\npackage = \"pkg\"\n\
             [services.db]\npackage = \"pkg\"\ndata-source = {{ image = \"db.sql\", database = \"d_1\" }}\n"
        );
        let (dir, spec) = in_temp_dir(&spec);
        let spec = spec.unwrap();
        let a = spec.service("a").unwrap();
        let deps: Vec<_> = a
            .depends_on
            .iter()
            .map(|d| (d.service.as_str(), d.kind))
            .collect();
        assert_eq!(
            deps,
            [
                ("b", DependencyKind::Service),
                ("c", DependencyKind::Service),
                ("db", DependencyKind::DataSource)
            ]
        );
        assert_eq!(a.package.kind, PackageKind::Directory);
        assert_eq!(a.package.path.resolved, dir.path().join("pkg"));
        assert_eq!(
            spec.service("b").unwrap().package.kind,
            PackageKind::Archive
        );
        // Nothing depends on tier `t` from outside, so it may start empty.
        assert_eq!(spec.tier("t").unwrap().min, 0);
        assert_eq!(spec.base_dir, dir.path());
    }

    #[test]
    fn absolute_paths_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        let abs = dir.path().join("pkg");
        let text = format!(
            "{HEAD}[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n[services.a]\npackage = {:?}\n",
            abs.to_str().unwrap()
        );
        let spec = DeploymentSpec::from_str(&text, "elsewhere/deploy.toml").unwrap();
        let pkg = &spec.service("a").unwrap().package.path;
        assert_eq!(
            (pkg.written.as_path(), pkg.resolved.as_path()),
            (abs.as_path(), abs.as_path())
        );
    }

    #[test]
    fn a_bare_file_name_resolves_against_the_current_directory() {
        let err = DeploymentSpec::from_str(
            &format!("{HEAD}[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n[services.a]\npackage = \"no/such/pkg\"\n"),
            "deploy.toml",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err.to_string()
                .starts_with("deploy.toml:8:11: package `no/such/pkg` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_are_collected_in_file_order() {
        let text = format!(
            "{HEAD}[tiers.t]\nmin = 5\nmax = 1\nservices = [\"a\", \"ghost\"]\n\
             [services.a]\npackage = \"pkg\"\nports = {{ p = 0 }}\n"
        );
        let (_dir, result) = in_temp_dir(&text);
        let lines: Vec<String> = result
            .unwrap_err()
            .lines()
            .map(|l| l.rsplit_once("deploy.toml:").unwrap().1.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "4:7: min (5) is greater than max (1)",
                "6:18: unknown service `ghost` (expected one of the [services.*] tables)",
                "9:15: port 0 is out of range (expected 1 to 65535)",
            ]
        );
    }

    #[test]
    fn a_missing_field_points_at_its_table() {
        let text = format!("{HEAD}\n[tiers.t]\nmax = 1\nservices = []\n");
        let err = DeploymentSpec::from_str(&text, "d.toml").unwrap_err();
        assert_eq!(err.to_string(), "d.toml:4:1: missing field `min`");
    }
}
