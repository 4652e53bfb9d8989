//! A validated deployment file: what the operator asked for, with every name checked, every
//! reference resolved and every relative path resolved against the file's directory.
//!
//! Parsing is [`DeploymentSpec::from_file`] / [`DeploymentSpec::from_str`]; the rules are in
//! `validate.rs`. Every failure is a [`SpecErrors`] list of `file:line:column: message`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::{DependencyKind, Port};
use crate::error::{SpecError, SpecErrors};
pub use crate::health::HealthPolicy;
use crate::ids::{Name, ServiceId};
pub use crate::retry::RetryPolicy;
pub use crate::scaling::ScalingPolicy;

/// The provider a launch configuration uses when it names none; also a `type`.
pub const DEFAULT_PROVIDER: &str = "local";

/// The `type`s a `[providers.NAME]` table may name: the provider kinds this binary builds.
pub const PROVIDER_TYPES: &[&str] = &[DEFAULT_PROVIDER, "cloud-driver", "ssh"];

/// A deployment: named tiers of servers and the services they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub name: Name,
    pub description: Option<String>,
    /// The deployment file as the caller named it.
    pub file: PathBuf,
    /// The file's directory: relative paths in the file are resolved against it.
    pub base_dir: PathBuf,
    pub tiers: BTreeMap<Name, TierSpec>,
    pub services: BTreeMap<Name, ServiceSpec>,
    pub personalities: BTreeMap<Name, PersonalitySpec>,
    /// The deployment's own providers (`[providers.NAME]`), which tiers name in `provider`.
    #[serde(default)]
    pub providers: BTreeMap<Name, ProviderSpec>,
    /// How often agents report their server's CPU and memory (`metrics-interval`).
    #[serde(default = "default_metrics_interval")]
    pub metrics_interval_ms: u64,
}

fn default_metrics_interval() -> u64 {
    crate::metrics::DEFAULT_INTERVAL_MS
}

/// `[providers.NAME]`: a provider of this deployment, built by the factory of its `type`
/// from its settings. Secrets are never settings, only names of keys in key management.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSpec {
    pub name: Name,
    /// One of [`PROVIDER_TYPES`].
    pub kind: Name,
    /// Every key of the table but `type`.
    pub settings: BTreeMap<String, ProviderSetting>,
}

/// One setting of a `[providers.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderSetting {
    Text(String),
    Integer(i64),
    Bool(bool),
    /// A list of strings (`hosts = ["a", "b"]`).
    List(Vec<String>),
    /// A setting named `key` or ending in `-key`: the name of a key in key management.
    Key(String),
}

/// A scalable group of servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSpec {
    pub name: Name,
    /// Servers launched at start and kept running by auto-recovery. 0 is allowed only for a
    /// tier whose services no other tier depends on or balances, since it would wait forever.
    pub min: u32,
    /// Upper bound for scale-up; at least 1 and at least `min`.
    pub max: u32,
    /// Services installed on every server of the tier, in file order.
    pub services: Vec<Name>,
    pub launch: LaunchConfig,
    /// Set for a load-balancer tier.
    pub balances: Option<BalanceSpec>,
    /// Whether and when a lost server of the tier is replaced.
    pub recovery: RecoverySpec,
    /// Scaling rules (`[tiers.x.scaling]`); without them the tier scales only when asked.
    #[serde(default)]
    pub scaling: Option<ScalingPolicy>,
}

/// Auto-recovery of a tier: a server whose agent stays LOST for `grace_ms`, or that the
/// provider reports gone, is replaced while `enabled`; otherwise the deployment fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySpec {
    pub enabled: bool,
    pub grace_ms: u64,
}

/// `recovery-grace` when the file gives none.
pub const DEFAULT_RECOVERY_GRACE_MS: u64 = 10_000;

impl Default for RecoverySpec {
    fn default() -> RecoverySpec {
        RecoverySpec {
            enabled: true,
            grace_ms: DEFAULT_RECOVERY_GRACE_MS,
        }
    }
}

/// What a load-balancer tier balances: a service carried by another tier, on one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSpec {
    pub service: Name,
    /// `balance-port`, or the service's first port in file order.
    pub port: Name,
}

/// How servers of a tier are obtained and prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchConfig {
    /// Cloud provider name; only its syntax is checked here (default [`DEFAULT_PROVIDER`]).
    pub provider: Name,
    /// Provider-specific machine image, if the provider needs one.
    pub image: Option<String>,
    /// The configuration-management action run on every new server.
    pub cm: Option<CmSpec>,
    /// A script personality run after `cm`, from [`DeploymentSpec::personalities`].
    pub personality: Option<Name>,
    /// `boot-timeout`: how long a new server's agent may take from launch to its handshake
    /// before the launch step fails (a cloud instance boots for minutes, a local process for
    /// milliseconds).
    pub boot_timeout_ms: u64,
}

/// `boot-timeout` when the launch block gives none.
pub const DEFAULT_BOOT_TIMEOUT_MS: u64 = 60_000;

/// The range `boot-timeout` may take: 1 s to 60 min.
pub const BOOT_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

/// enStratus's object-store configuration management: a named group of components (cm-world
/// packages) fetched from cloud files and run in order on every new server of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalitySpec {
    pub name: Name,
    pub components: Vec<PackageRef>,
}

/// A configuration-management action: which adapter component runs which run list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmSpec {
    pub adapter: Name,
    pub package: PackageRef,
    /// Inputs for the tool (manifests, playbooks, cookbooks), delivered to the adapter's
    /// work directory as `files/`.
    pub files: Option<SpecPath>,
    pub run_list: Vec<String>,
    pub settings: BTreeMap<String, String>,
    /// The operator's `run-as`: `program-user` takes the adapter's root away (never adds it).
    #[serde(default)]
    pub run_as: Option<crate::plugin::capabilities::RunAs>,
}

/// A path from the file, as written and as resolved against [`DeploymentSpec::base_dir`]
/// (`base_dir.join(written)`, not canonicalized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecPath {
    pub written: PathBuf,
    pub resolved: PathBuf,
}

/// Whether a package is an unpacked directory or an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageKind {
    Directory,
    /// `.tar`, `.tar.gz` or `.tgz`.
    Archive,
}

/// A service or CM package that existed when the file was validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    pub path: SpecPath,
    pub kind: PackageKind,
}

/// A service installed on every server of its tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: Name,
    pub id: ServiceId,
    /// The one tier that carries it.
    pub tier: Name,
    pub package: PackageRef,
    pub data_source: Option<DataSourceSpec>,
    /// In file order; the first one is the default `balance-port`.
    pub ports: Vec<PortSpec>,
    /// Names of the credentials to generate for it.
    pub credentials: Vec<Name>,
    pub settings: BTreeMap<String, String>,
    pub capabilities: CapabilityOverrides,
    /// In file order.
    pub depends_on: Vec<DependencySpec>,
    /// How its retryable hook errors are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How often its health is checked once it runs, and what CRITICAL leads to.
    #[serde(default)]
    pub health: HealthPolicy,
}

/// The database image a database service installs before its dependents are configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSourceSpec {
    /// An existing file.
    pub image: SpecPath,
    /// `[A-Za-z0-9_]+`, so that plugins can use it unquoted in SQL.
    pub database: String,
}

/// A named port; `public` equals `private` unless the file says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: Name,
    pub private: u16,
    pub public: u16,
}

impl PortSpec {
    /// The port as hooks see it.
    pub fn to_context(&self) -> Port {
        Port {
            name: self.name.to_string(),
            private_port: self.private,
            public_port: self.public,
        }
    }
}

/// `service` depends on the named service, or on the data source it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencySpec {
    pub service: Name,
    pub kind: DependencyKind,
}

/// The operator's narrowing of a plugin's manifest. `None` keeps what the manifest declares;
/// a value can only narrow it (the plugin runtime intersects, it never widens).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityOverrides {
    /// Memory cap of one hook call, at least 1.
    pub memory_mb: Option<u64>,
    /// Deadline of one hook call, at least 1.
    pub timeout_ms: Option<u64>,
    /// Bound on captured output of a started program, at least 1.
    pub output_bytes: Option<u64>,
    /// Directories (relative to the service directory) the plugin may keep.
    pub dirs: Option<Vec<String>>,
    /// Absolute program paths the plugin may keep.
    pub programs: Option<Vec<String>>,
    /// Hosts the plugin may keep.
    pub network: Option<Vec<String>>,
    /// Environment variable names the plugin may keep.
    pub env: Option<Vec<String>>,
    /// `program-env` entries the plugin may keep.
    #[serde(default)]
    pub program_env: Option<Vec<String>>,
    /// Task limit of the service's programs, at least 1.
    #[serde(default)]
    pub processes: Option<u64>,
    /// MiB the plugin's writable directories may use, at least 1.
    #[serde(default)]
    pub disk_mb: Option<u64>,
}

/// The text of the deployment file at `path`, or an error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(path).map_err(|e| SpecError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read the deployment file: {e}"),
    })
}

impl DeploymentSpec {
    /// Every file or directory on this machine the deployment reads: packages, data sources,
    /// CM inputs, personality components and scaling rules, resolved.
    pub fn local_paths(&self) -> Vec<&std::path::Path> {
        let mut paths: Vec<&std::path::Path> = Vec::new();
        for svc in self.services.values() {
            paths.push(&svc.package.path.resolved);
            if let Some(ds) = &svc.data_source {
                paths.push(&ds.image.resolved);
            }
        }
        for tier in self.tiers.values() {
            if let Some(cm) = &tier.launch.cm {
                paths.push(&cm.package.path.resolved);
                paths.extend(cm.files.as_ref().map(|f| f.resolved.as_path()));
            }
            let rule = tier.scaling.as_ref().and_then(|s| s.rule.as_ref());
            paths.extend(rule.map(|r| r.path.resolved.as_path()));
        }
        for personality in self.personalities.values() {
            paths.extend(
                personality
                    .components
                    .iter()
                    .map(|c| c.path.resolved.as_path()),
            );
        }
        paths
    }

    /// Reads and validates a deployment file. Messages name `path` as given.
    pub fn from_file(path: impl AsRef<Path>) -> Result<DeploymentSpec, SpecErrors> {
        let path = path.as_ref();
        Self::from_str(&read_file(path)?, path)
    }

    /// Validates `text`; `path` names it in messages and anchors relative paths.
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<DeploymentSpec, SpecErrors> {
        crate::validate::parse(text, path.as_ref())
    }

    /// The `type` of the provider this deployment calls `name`: `local` for the built-in one,
    /// a table's `type` for its own; `None` for a name it does not know.
    pub fn provider_kind(&self, name: &str) -> Option<&str> {
        if name == DEFAULT_PROVIDER {
            return Some(DEFAULT_PROVIDER);
        }
        self.providers.get(name).map(|p| p.kind.as_str())
    }

    /// Whether `tier`'s servers are processes on this machine (a provider of type `local`).
    pub fn runs_locally(&self, tier: &TierSpec) -> bool {
        self.provider_kind(tier.launch.provider.as_str()) == Some(DEFAULT_PROVIDER)
    }

    pub fn tier(&self, name: &str) -> Option<&TierSpec> {
        self.tiers.get(name)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.get(name)
    }

    /// The tier that carries `service`.
    pub fn tier_of(&self, service: &str) -> Option<&TierSpec> {
        self.services
            .get(service)
            .and_then(|s| self.tiers.get(&s.tier))
    }

    /// The services of `tier`, in the tier's order.
    pub fn services_of(&self, tier: &str) -> Vec<&ServiceSpec> {
        self.tiers
            .get(tier)
            .map(|t| {
                t.services
                    .iter()
                    .filter_map(|s| self.services.get(s))
                    .collect()
            })
            .unwrap_or_default()
    }
}
