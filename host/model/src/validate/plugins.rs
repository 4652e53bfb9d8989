//! Launch validation: every package the file names is held against its own manifest before
//! anything starts, so that a refusal the agent would make after servers were launched is
//! made here, located in the file:
//!
//! - the manifest loads (exists, parses, grants only what its world supports);
//! - its world fits its use (service, load balancer, CM adapter, personality component);
//! - a package directory holds its built component (`component.rs`);
//! - the operator's `capabilities` only narrow it;
//! - the programs it is granted exist (an error where the server is this machine and nothing
//!   runs before the plugin that could install them, a warning otherwise);
//! - programs known to run arbitrary code, and programs run as root, are a warning.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::manifest_file::{self, PackageManifest};
use super::service::{override_dir, override_program};
use super::{Checker, in_file_order};
use crate::context::World;
use crate::plugin::capabilities::{
    Capabilities, CapabilityOverride, EnvPattern, NetworkGrant, RunAs,
};
use crate::plugin::risky;
use crate::raw::{RawCapabilities, RawFile};
use crate::spec::*;

/// Manifests read so far in one validation, by resolved package path.
pub(super) type Manifests = HashMap<PathBuf, Result<PackageManifest, String>>;

/// What a package is used as, which decides the worlds it may have.
enum Role<'a> {
    Service(&'a str),
    Balancer { service: &'a str, tier: &'a str },
    CmAdapter(&'a str),
    Component(&'a str),
}

impl Role<'_> {
    fn accepts(&self, world: World) -> bool {
        match self {
            // The proxy world exports the service hooks too.
            Role::Service(_) => matches!(world, World::Service | World::Proxy),
            Role::Balancer { .. } => world == World::Proxy,
            Role::CmAdapter(_) | Role::Component(_) => world == World::Cm,
        }
    }

    /// What the package is used as, for messages.
    fn who(&self) -> String {
        match self {
            Role::Service(s) | Role::Balancer { service: s, .. } => format!("service `{s}`"),
            Role::CmAdapter(t) => format!("the cm adapter of tier `{t}`"),
            Role::Component(p) => format!("a component of personality `{p}`"),
        }
    }

    fn needs(&self) -> String {
        match self {
            Role::Service(_) => "a `service` (or `proxy`) plugin".into(),
            Role::Balancer { tier, .. } => {
                format!("a `proxy` plugin, because tier `{tier}` is a load balancer")
            }
            Role::CmAdapter(_) | Role::Component(_) => "a `cm` plugin".into(),
        }
    }
}

/// Where a plugin's programs run, which decides how a missing one is reported.
struct Machine<'a> {
    /// The servers are this machine (the local provider).
    local: bool,
    /// Nothing runs on the server before this plugin that could install a program.
    first: bool,
    provider: &'a str,
}

/// A package as the file names it and as validation resolved it.
struct Use<'a> {
    written: &'a Spanned<String>,
    package: &'a PackageRef,
}

impl Use<'_> {
    /// Where problems of the package as a whole are reported: its value in the file.
    fn span(&self) -> Range<usize> {
        self.written.span()
    }
}

impl Checker<'_> {
    fn warn(&mut self, span: Range<usize>, message: impl std::fmt::Display) {
        let w =
            crate::error::SpecError::at(self.file, self.text, span, format!("warning: {message}"));
        self.warnings.push(w);
    }

    /// Checks every package of the file against its manifest; `spec` holds what the other
    /// checks accepted (entries they refused are skipped, they are already reported).
    pub(super) fn plugins(&mut self, raw: &RawFile, spec: &DeploymentSpec) {
        self.service_packages(raw, spec);
        self.cm_packages(raw, spec);
        self.personality_packages(raw, spec);
    }

    fn service_packages(&mut self, raw: &RawFile, spec: &DeploymentSpec) {
        for (key, svc) in in_file_order(&raw.services) {
            let (Some(s), raw_svc) = (spec.service(key.get_ref()), svc.get_ref()) else {
                continue;
            };
            let Some(tier) = spec.tier(s.tier.as_str()) else {
                continue;
            };
            let role = match tier.balances {
                Some(_) => Role::Balancer {
                    service: key.get_ref(),
                    tier: s.tier.as_str(),
                },
                None => Role::Service(key.get_ref()),
            };
            let machine = Machine {
                local: spec.runs_locally(tier),
                first: tier.launch.cm.is_none() && tier.launch.personality.is_none(),
                provider: tier.launch.provider.as_str(),
            };
            let at = Use {
                written: &raw_svc.package,
                package: &s.package,
            };
            let narrowing = raw_svc.capabilities.as_ref();
            let caps = self.package_use(&at, &role, &machine, narrowing, None);
            if let (Some(caps), Some(ds), Some(raw_ds)) =
                (caps, &s.data_source, &raw_svc.data_source)
            {
                self.data_source_fits(&ds.image.resolved, &raw_ds.image, caps.disk_mb);
            }
        }
    }

    /// A data source is fetched into the service directory, so it must fit the service's disk
    /// limit; refused here, before it is uploaded (a sparse file would be stored dense).
    fn data_source_fits(&mut self, image: &Path, written: &Spanned<String>, disk_mb: u64) {
        let Ok(meta) = std::fs::metadata(image) else {
            return; // A missing image is reported where paths are checked.
        };
        let limit = disk_mb.saturating_mul(1 << 20);
        if meta.len() > limit {
            let msg = format!(
                "data source {} is {} bytes, more than the service's disk limit of {disk_mb} MiB \
                 (`disk-mb`), which it is fetched into",
                image.display(),
                meta.len()
            );
            self.error(written.span(), msg);
        }
    }

    /// CM adapters run first on a new server, so nothing could have installed their programs.
    fn cm_packages(&mut self, raw: &RawFile, spec: &DeploymentSpec) {
        for (key, t) in in_file_order(&raw.tiers) {
            let (Some(tier), Some(raw_cm)) = (
                spec.tier(key.get_ref()),
                t.get_ref().launch.as_ref().and_then(|l| l.cm.as_ref()),
            ) else {
                continue;
            };
            let Some(cm) = &tier.launch.cm else { continue };
            let machine = Machine {
                local: spec.runs_locally(tier),
                first: true,
                provider: tier.launch.provider.as_str(),
            };
            let at = Use {
                written: &raw_cm.package,
                package: &cm.package,
            };
            let role = Role::CmAdapter(key.get_ref());
            self.package_use(&at, &role, &machine, None, raw_cm.run_as.as_ref());
        }
    }

    /// Components run in order after the tier's CM adapter, on every tier that names them.
    fn personality_packages(&mut self, raw: &RawFile, spec: &DeploymentSpec) {
        for (key, p) in in_file_order(&raw.personalities) {
            let Some(personality) = spec.personalities.get(key.get_ref().as_str()) else {
                continue;
            };
            let users: Vec<&TierSpec> = spec
                .tiers
                .values()
                .filter(|t| t.launch.personality.as_ref() == Some(&personality.name))
                .collect();
            let local = users.iter().all(|t| spec.runs_locally(t));
            let cm_first = users.iter().any(|t| t.launch.cm.is_some());
            let provider = users
                .first()
                .map_or(DEFAULT_PROVIDER, |t| t.launch.provider.as_str());
            for (i, (written, package)) in p
                .get_ref()
                .components
                .iter()
                .zip(&personality.components)
                .enumerate()
            {
                let machine = Machine {
                    local,
                    first: i == 0 && !cm_first,
                    provider,
                };
                let at = Use { written, package };
                let role = Role::Component(key.get_ref());
                self.package_use(&at, &role, &machine, None, None);
            }
        }
    }

    /// One use of a package: its manifest, world, narrowing and programs.
    fn package_use(
        &mut self,
        at: &Use<'_>,
        role: &Role<'_>,
        machine: &Machine<'_>,
        narrowing: Option<&RawCapabilities>,
        run_as: Option<&Spanned<String>>,
    ) -> Option<Capabilities> {
        let m = self.manifest(at, role)?;
        let shown = m.shown(at.package);
        let caps = match narrowing {
            None => Some(m.manifest.capabilities.clone()),
            Some(raw) => self.narrowed(raw, &m.manifest.capabilities, &shown),
        };
        let caps = caps.and_then(|c| self.run_as_narrowed(c, run_as, &shown));
        // Only a tier's CM adapter may run as root, where its cm table can take that away; a
        // personality component has no table an operator could veto it from.
        if let (Role::Component(p), Some(c)) = (role, &caps)
            && c.run_as == RunAs::Root
        {
            let msg = format!(
                "{shown} declares run-as = \"root\", but a component of personality `{p}` runs \
                 as the program user (only a tier's CM adapter may run as root)"
            );
            self.error(at.span(), msg);
            return None;
        }
        let caps = caps?;
        self.programs(at, &m.manifest.plugin.name, &shown, &caps, role, machine);
        Some(caps)
    }

    /// The package's manifest if it loads and its world fits `role`; reported otherwise.
    fn manifest(&mut self, at: &Use<'_>, role: &Role<'_>) -> Option<PackageManifest> {
        let loaded = self
            .manifests
            .entry(at.package.path.resolved.clone())
            .or_insert_with(|| manifest_file::load(at.package))
            .clone();
        let m = match loaded {
            Ok(m) => m,
            Err(e) => {
                let msg = format!("package `{}` cannot be used: {e}", at.written.get_ref());
                self.error(at.span(), msg);
                return None;
            }
        };
        let world = m.manifest.plugin.world;
        if !role.accepts(world) {
            let msg = format!(
                "{} declares world `{world}`, but {} needs {}",
                m.shown(at.package),
                role.who(),
                role.needs()
            );
            self.error(at.span(), msg);
            return None;
        }
        if let Err(e) = super::component::check_built(at.package, &m) {
            let msg = format!("package `{}` {e}", at.written.get_ref());
            self.error(at.span(), msg);
            return None;
        }
        Some(m)
    }

    /// The manifest's capabilities narrowed by the operator's; each widening is reported at
    /// its own key. `None` when anything was refused.
    fn narrowed(
        &mut self,
        raw: &RawCapabilities,
        manifest: &Capabilities,
        shown: &str,
    ) -> Option<Capabilities> {
        let mut n = Narrowing::new();
        n.limit(&raw.memory_mb, |o, v| o.memory_mb = Some(v));
        n.limit(&raw.timeout_ms, |o, v| o.timeout_ms = Some(v));
        n.limit(&raw.output_bytes, |o, v| o.output_bytes = Some(v));
        n.limit(&raw.processes, |o, v| o.processes = Some(v));
        n.limit(&raw.disk_mb, |o, v| o.disk_mb = Some(v));
        n.list(
            &raw.program_env,
            |s| EnvPattern::try_from(s.to_string()),
            |o, v| o.program_env = Some(v),
        );
        n.list(&raw.dirs, override_dir, |o, v| o.dirs = Some(v));
        n.list(&raw.programs, override_program, |o, v| o.programs = Some(v));
        n.list(
            &raw.network,
            |s| NetworkGrant::try_from(s.to_string()),
            |o, v| o.network = Some(v),
        );
        n.list(&raw.env, env_name, |o, v| o.env = Some(v));
        let mut widened = false;
        for (span, one) in n.singles {
            if let Err(e) = manifest.narrow(&one) {
                let msg = format!("widens the manifest: {} in {shown}", e.widened.join("; "));
                self.error(span, msg);
                widened = true;
            }
        }
        if widened || !n.complete {
            return None;
        }
        manifest.narrow(&n.whole).ok()
    }

    /// The CM table's `run-as`, which may take the adapter's root away and never add it.
    fn run_as_narrowed(
        &mut self,
        caps: Capabilities,
        run_as: Option<&Spanned<String>>,
        shown: &str,
    ) -> Option<Capabilities> {
        let Some(r) = run_as else {
            return Some(caps);
        };
        // An unknown value was reported where the tier was read.
        let value = RunAs::try_from(r.get_ref().as_str()).ok()?;
        let op = CapabilityOverride {
            run_as: Some(value),
            ..CapabilityOverride::default()
        };
        match caps.narrow(&op) {
            Ok(c) => Some(c),
            Err(e) => {
                let msg = format!("widens the manifest: {} in {shown}", e.widened.join("; "));
                self.error(r.span(), msg);
                None
            }
        }
    }

    /// Missing programs and programs that run arbitrary code.
    fn programs(
        &mut self,
        at: &Use<'_>,
        plugin: &str,
        shown: &str,
        caps: &Capabilities,
        role: &Role<'_>,
        machine: &Machine<'_>,
    ) {
        if let Some(why) = risky::run_as_warning(caps.run_as) {
            let msg = format!("plugin `{plugin}` ({}) {why}", role.who());
            self.warn(at.span(), msg);
        }
        for program in &caps.programs {
            let p = program.as_str();
            if let Some(rel) = p.strip_prefix("service:") {
                // Archives are not unpacked here; the agent checks them at install.
                if at.package.kind == PackageKind::Directory
                    && let Some(problem) = unusable(&at.package.path.resolved.join(rel))
                {
                    let msg =
                        format!("{shown} grants program {p}, but `{rel}` {problem} in the package");
                    self.error(at.span(), msg);
                }
            } else if let Some(problem) = unusable(Path::new(p)) {
                self.missing_program(at, shown, p, problem, machine);
            }
            let on_disk = match p.strip_prefix("service:") {
                Some(rel) if at.package.kind == PackageKind::Directory => {
                    Some(at.package.path.resolved.join(rel))
                }
                Some(_) => None,
                None => Some(PathBuf::from(p)),
            };
            if let Some(why) = risk_warning(p, on_disk.as_deref()) {
                let msg = format!("plugin `{plugin}` ({}) may run {why}", role.who());
                self.warn(at.span(), msg);
            }
        }
    }

    fn missing_program(
        &mut self,
        at: &Use<'_>,
        shown: &str,
        p: &str,
        problem: &str,
        machine: &Machine<'_>,
    ) {
        let msg = format!("{shown} grants program {p}, which {problem} on this machine");
        if !machine.local {
            let provider = machine.provider;
            self.warn(
                at.span(),
                format!("{msg} (servers of provider `{provider}` must have it)"),
            );
        } else if !machine.first {
            self.warn(
                at.span(),
                format!("{msg} yet (configuration management that runs first must install it)"),
            );
        } else {
            self.error(
                at.span(),
                format!("{msg}, where the local provider's servers run"),
            );
        }
    }
}

/// An `env` entry that the syntax checks accepted.
fn env_name(s: &str) -> Result<String, ()> {
    let valid = !s.is_empty() && !s.contains(['=', '\0']);
    valid.then(|| s.to_string()).ok_or(())
}

/// What is wrong with `path` as a program to run: `None` for an executable file.
fn unusable(path: &Path) -> Option<&'static str> {
    match std::fs::metadata(path) {
        Err(_) => Some("does not exist"),
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
            Some("is not an executable file")
        }
        Ok(_) => None,
    }
}

/// `program, which runs other programs...` when the program, or the file a link at
/// `on_disk` leads to on this machine (`/usr/bin/awk` -> `mawk`, a package's `bin/x` ->
/// `/bin/sh`), is known to run arbitrary code.
fn risk_warning(program: &str, on_disk: Option<&Path>) -> Option<String> {
    if let Some(w) = risky::warning(program) {
        return Some(w);
    }
    let target = std::fs::canonicalize(on_disk?).ok()?;
    let risk = risky::risk_of(target.to_str()?)?;
    let name = target.file_name()?.to_string_lossy();
    Some(format!(
        "{program} (a link to `{name}`), which {}",
        risk.why()
    ))
}

/// The operator's narrowing, whole and one entry at a time (so each widening has a location).
struct Narrowing {
    whole: CapabilityOverride,
    singles: Vec<(Range<usize>, CapabilityOverride)>,
    /// False when an entry did not parse (already reported by the syntax checks).
    complete: bool,
}

impl Narrowing {
    fn new() -> Narrowing {
        Narrowing {
            whole: CapabilityOverride::default(),
            singles: Vec::new(),
            complete: true,
        }
    }

    fn limit(&mut self, v: &Option<Spanned<u64>>, set: fn(&mut CapabilityOverride, u64)) {
        let Some(v) = v else { return };
        if *v.get_ref() == 0 {
            self.complete = false;
            return;
        }
        let mut one = CapabilityOverride::default();
        set(&mut one, *v.get_ref());
        set(&mut self.whole, *v.get_ref());
        self.singles.push((v.span(), one));
    }

    fn list<T: Clone, E>(
        &mut self,
        items: &Option<Vec<Spanned<String>>>,
        parse: impl Fn(&str) -> Result<T, E>,
        set: fn(&mut CapabilityOverride, Vec<T>),
    ) {
        let Some(items) = items else { return };
        let mut all = Vec::new();
        for item in items {
            let Ok(v) = parse(item.get_ref()) else {
                self.complete = false;
                continue;
            };
            let mut one = CapabilityOverride::default();
            set(&mut one, vec![v.clone()]);
            self.singles.push((item.span(), one));
            all.push(v);
        }
        set(&mut self.whole, all);
    }
}
