//! Rules of a service: package, data source, ports, credentials, capabilities, dependencies.

use toml::Spanned;

use super::{Checker, in_file_order};
use crate::context::DependencyKind;
use crate::ids::{Name, ServiceId};
use crate::plugin::capabilities::{DirGrant, EnvPattern, NetworkGrant, Program};
use crate::raw::{self, RawCapabilities, RawPort, RawService};
use crate::spec::*;

impl Checker<'_> {
    pub(super) fn service(
        &mut self,
        key: &Spanned<String>,
        raw: &RawService,
        id: ServiceId,
        tier: Option<String>,
        all: &raw::SpannedMap<RawService>,
    ) -> Option<ServiceSpec> {
        let name = self.name(key, "service name:");
        let package = self.package(&raw.package);
        let data_source = raw.data_source.as_ref().and_then(|ds| {
            let image = self.path(&ds.image, "data-source image", "a database image file");
            let db = ds.database.get_ref();
            if db.is_empty() || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                self.error(
                    ds.database.span(),
                    format!("invalid database name `{db}`: expected only letters, digits and `_`"),
                );
                return None;
            }
            Some(DataSourceSpec {
                image: image?,
                database: db.clone(),
            })
        });
        let ports = self.ports(&raw.ports);
        let mut credentials = Vec::new();
        for c in &raw.credentials {
            if let Some(n) = self.name(c, "credential name:") {
                if credentials.contains(&n) {
                    self.error(c.span(), format!("credential `{n}` is listed twice"));
                }
                credentials.push(n);
            }
        }
        let settings = self.settings(&raw.settings);
        let capabilities = self.capabilities(raw.capabilities.as_ref());
        let retry = self.retry(raw.retry.as_ref());
        let health = self.health(raw.health.as_ref());
        let mut depends_on: Vec<DependencySpec> = Vec::new();
        for dep in &raw.depends_on {
            let (target, data_source) = (&dep.get_ref().service, dep.get_ref().data_source);
            let kind = if data_source {
                DependencyKind::DataSource
            } else {
                DependencyKind::Service
            };
            let Some(t) = all.get(target.as_str()) else {
                self.error(
                    dep.span(),
                    format!("dependency on unknown service `{target}`"),
                );
                continue;
            };
            if data_source && t.get_ref().data_source.is_none() {
                self.error(
                    dep.span(),
                    format!(
                        "dependency on the data source of `{target}`, which has no `data-source`"
                    ),
                );
                continue;
            }
            let Ok(service) = Name::new(target.as_str()) else {
                continue;
            };
            if depends_on.iter().any(|d| d.service == service) {
                self.error(
                    dep.span(),
                    format!("`{target}` is listed twice in depends-on"),
                );
                continue;
            }
            depends_on.push(DependencySpec { service, kind });
        }
        Some(ServiceSpec {
            name: name?,
            id,
            tier: Name::new(tier?).ok()?,
            package: package?,
            data_source: match raw.data_source {
                Some(_) => Some(data_source?),
                None => None,
            },
            ports: ports?,
            credentials,
            settings,
            capabilities,
            depends_on,
            retry,
            health,
        })
    }

    fn ports(&mut self, raw: &raw::SpannedMap<RawPort>) -> Option<Vec<PortSpec>> {
        let mut out: Vec<PortSpec> = Vec::new();
        let mut ok = true;
        for (key, port) in in_file_order(raw) {
            let name = self.name(key, "port name:");
            let (private, public) = match port.get_ref() {
                RawPort::Number(n) => {
                    let p = self.port_number(*n, port.span());
                    (p.map(|p| (p, port.span())), p.map(|p| (p, port.span())))
                }
                RawPort::Table(t) => {
                    let private = self.port_number(*t.private.get_ref(), t.private.span());
                    let public = match &t.public {
                        Some(p) => self
                            .port_number(*p.get_ref(), p.span())
                            .map(|n| (n, p.span())),
                        None => private.map(|n| (n, t.private.span())),
                    };
                    (private.map(|n| (n, t.private.span())), public)
                }
            };
            let (Some(name), Some((private, private_span)), Some((public, public_span))) =
                (name, private, public)
            else {
                ok = false;
                continue;
            };
            if let Some(other) = out.iter().find(|p| p.private == private) {
                let msg = format!(
                    "private port {private} is already used by port `{}` of this service",
                    other.name
                );
                self.error(private_span, msg);
                ok = false;
            } else if let Some(other) = out.iter().find(|p| p.public == public) {
                let msg = format!(
                    "public port {public} is already used by port `{}` of this service",
                    other.name
                );
                self.error(public_span, msg);
                ok = false;
            }
            out.push(PortSpec {
                name,
                private,
                public,
            });
        }
        ok.then_some(out)
    }

    fn port_number(&mut self, n: i64, span: std::ops::Range<usize>) -> Option<u16> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(
                    span,
                    format!("port {n} is out of range (expected 1 to 65535)"),
                );
                None
            }
        }
    }

    fn capabilities(&mut self, raw: Option<&RawCapabilities>) -> CapabilityOverrides {
        let Some(raw) = raw else {
            return CapabilityOverrides::default();
        };
        let mut positive = |v: &Option<Spanned<u64>>, what: &str| {
            let v = v.as_ref()?;
            if *v.get_ref() == 0 {
                self.error(v.span(), format!("{what} must be at least 1"));
            }
            Some(*v.get_ref())
        };
        let memory_mb = positive(&raw.memory_mb, "memory-mb");
        let timeout_ms = positive(&raw.timeout_ms, "timeout-ms");
        let output_bytes = positive(&raw.output_bytes, "output-bytes");
        let processes = positive(&raw.processes, "processes");
        let disk_mb = positive(&raw.disk_mb, "disk-mb");
        let list = |v: &Option<Vec<Spanned<String>>>| {
            v.as_ref()
                .map(|l| l.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>())
        };
        // Each entry must parse as the plugin runtime will parse it, so that a typo is
        // reported here and not by the agent after servers were launched.
        for p in raw.programs.iter().flatten() {
            if !p.get_ref().starts_with('/') && !p.get_ref().starts_with("service:") {
                let msg = format!(
                    "program `{}` is not an absolute path (expected e.g. `/usr/sbin/haproxy`)",
                    p.get_ref()
                );
                self.error(p.span(), msg);
            } else if let Err(e) = override_program(p.get_ref()) {
                self.error(p.span(), e);
            }
        }
        for d in raw.dirs.iter().flatten() {
            if let Err(e) = override_dir(d.get_ref()) {
                self.error(d.span(), e);
            }
        }
        for n in raw.network.iter().flatten() {
            if let Err(e) = NetworkGrant::try_from(n.get_ref().clone()) {
                self.error(n.span(), e);
            }
        }
        for k in raw.env.iter().flatten() {
            if k.get_ref().is_empty() || k.get_ref().contains(['=', '\0']) {
                let msg = format!("env `{}` is not a variable name", k.get_ref());
                self.error(k.span(), msg);
            }
        }
        for p in raw.program_env.iter().flatten() {
            if let Err(e) = EnvPattern::try_from(p.get_ref().clone()) {
                self.error(p.span(), e);
            }
        }
        CapabilityOverrides {
            program_env: list(&raw.program_env),
            processes,
            disk_mb,
            memory_mb,
            timeout_ms,
            output_bytes,
            dirs: list(&raw.dirs),
            programs: list(&raw.programs),
            network: list(&raw.network),
            env: list(&raw.env),
        }
    }
}

/// A `programs` entry of the deployment file as the plugin runtime reads it.
pub(super) fn override_program(p: &str) -> Result<Program, String> {
    Program::try_from(p.to_string())
}

/// A `dirs` entry of the deployment file, `<dir>` (read-write) or `<dir>:<access>`, as the
/// engine hands it to the plugin runtime.
pub(super) fn override_dir(d: &str) -> Result<DirGrant, String> {
    let (dir, access) = d.split_once(':').unwrap_or((d, "read-write"));
    serde_json::from_value(serde_json::json!({ "dir": dir, "access": access })).map_err(|e| {
        format!("{e} (a `dirs` entry is `<kind>` or `<kind>:read-only`, as in plugin.toml)")
    })
}
