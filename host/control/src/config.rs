//! The control plane's configuration file (`stratus serve --config FILE`, TOML): the serve
//! options an operator sets on every start, and `[providers.NAME]` tables every deployment
//! may name. Command-line flags win over the file. Every problem is located at
//! `file:line:column`; an unknown key is one.

use crate::paths::StatePaths;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use stratus_model::spec::{DeploymentSpec, ProviderSpec};
use stratus_model::{Name, SpecError, SpecErrors};
use stratus_protocol::DialAddress;
use toml::Spanned;

/// Largest configuration file read: a long one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Where a started control plane publishes the providers of its configuration, for the CLI's
/// early checks of a deployment file (`<state>/control-providers.json`).
const PUBLISHED: &str = "control-providers.json";
/// Mode of the published providers file.
const PUBLISHED_MODE: u32 = 0o600;

/// The configuration file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    listen: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    files_listen: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    agent_tls_cert: Option<Spanned<String>>,
    agent_tls_key: Option<Spanned<String>>,
    cloud_files: Option<Spanned<String>>,
    /// Checked by the model, as a deployment file's tables are.
    #[allow(dead_code)]
    providers: Option<toml::Value>,
}

/// The configuration file, checked; paths in it are resolved against its directory.
#[derive(Debug, Clone, Default)]
pub struct ControlConfig {
    pub listen: Option<SocketAddr>,
    pub advertise: Option<DialAddress>,
    pub files_listen: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub agent_tls_cert: Option<PathBuf>,
    pub agent_tls_key: Option<PathBuf>,
    pub cloud_files: Option<String>,
    pub providers: ControlProviders,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {}: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("configuration file {}: larger than {MAX_CONFIG_BYTES} bytes", file.display())]
    TooLarge { file: PathBuf },
    #[error("configuration file {}: not a regular file", file.display())]
    NotAFile { file: PathBuf },
    /// Every problem, one per line, each at `file:line:column`.
    #[error("{0}")]
    Invalid(SpecErrors),
}

impl ControlConfig {
    /// Reads and checks the configuration file at `file`.
    pub fn read(file: &Path) -> Result<ControlConfig, ConfigError> {
        let read = |error| ConfigError::Read {
            file: file.to_path_buf(),
            error,
        };
        let meta = std::fs::metadata(file).map_err(read)?;
        // A FIFO or a device would hold the start in a read that never ends.
        if !meta.is_file() {
            return Err(ConfigError::NotAFile {
                file: file.to_path_buf(),
            });
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file: file.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(file).map_err(read)?;
        ControlConfig::from_str(&text, file).map_err(ConfigError::Invalid)
    }

    /// Checks configuration `text`; `file` names it in messages and anchors relative paths.
    pub fn from_str(text: &str, file: &Path) -> Result<ControlConfig, SpecErrors> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| SpecError::from_toml(file, text, &e))?;
        let mut c = Checker {
            file,
            text,
            errors: Vec::new(),
        };
        let tables = stratus_model::control_plane_providers(text, file)
            .map_err(|e| c.errors.extend(e))
            .unwrap_or_default();
        let config = ControlConfig {
            listen: c.parsed(&raw.listen, "an address:port to listen on"),
            advertise: c.parsed(&raw.advertise, "a host:port agents dial"),
            files_listen: c.parsed(&raw.files_listen, "an address:port to listen on"),
            http: c.parsed(&raw.http, "an address:port to listen on"),
            tls_cert: c.path(&raw.tls_cert),
            tls_key: c.path(&raw.tls_key),
            agent_tls_cert: c.path(&raw.agent_tls_cert),
            agent_tls_key: c.path(&raw.agent_tls_key),
            cloud_files: c.cloud_files(&raw.cloud_files),
            providers: ControlProviders {
                origin: file.to_path_buf(),
                tables,
            },
        };
        c.pairs(&raw);
        if c.errors.is_empty() {
            return Ok(config);
        }
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(SpecErrors(c.errors))
    }
}

/// Collects located problems of one configuration text.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<SpecError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: String) {
        let e = SpecError::at(self.file, self.text, span, message);
        self.errors.push(e);
    }

    /// A value that must parse as `T`, or a located error saying what was expected.
    fn parsed<T: std::str::FromStr>(
        &mut self,
        value: &Option<Spanned<String>>,
        expected: &str,
    ) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = value.as_ref()?;
        match v.get_ref().parse() {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                let msg = format!("`{}`: expected {expected} ({e})", v.get_ref());
                self.error(v.span(), msg);
                None
            }
        }
    }

    /// A path, relative to the configuration file's directory.
    fn path(&mut self, value: &Option<Spanned<String>>) -> Option<PathBuf> {
        let v = value.as_ref()?;
        if v.get_ref().is_empty() {
            self.error(v.span(), "an empty path".into());
            return None;
        }
        Some(self.resolved(v.get_ref()))
    }

    fn resolved(&self, written: &str) -> PathBuf {
        match self.file.parent() {
            Some(dir) => dir.join(written),
            None => PathBuf::from(written),
        }
    }

    /// A directory (relative to the file's) or an `s3://` bucket, as `--cloud-files` takes.
    fn cloud_files(&mut self, value: &Option<Spanned<String>>) -> Option<String> {
        let v = value.as_ref()?;
        if v.get_ref().starts_with("s3://") {
            return Some(v.get_ref().clone());
        }
        let path = self.path(value)?;
        Some(path.to_string_lossy().into_owned())
    }

    /// Settings that only come together.
    fn pairs(&mut self, raw: &RawConfig) {
        let pairs = [
            (&raw.tls_cert, &raw.tls_key, "tls-cert", "tls-key"),
            (&raw.tls_key, &raw.tls_cert, "tls-key", "tls-cert"),
            (
                &raw.agent_tls_cert,
                &raw.agent_tls_key,
                "agent-tls-cert",
                "agent-tls-key",
            ),
            (
                &raw.agent_tls_key,
                &raw.agent_tls_cert,
                "agent-tls-key",
                "agent-tls-cert",
            ),
        ];
        for (given, partner, name, needed) in pairs {
            if let (Some(v), None) = (given, partner) {
                self.error(v.span(), format!("`{name}` needs `{needed}` too"));
            }
        }
    }
}

/// The providers of the control plane's configuration, which every deployment may name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlProviders {
    /// The configuration file they were declared in, named in messages.
    pub origin: PathBuf,
    pub tables: BTreeMap<Name, ProviderSpec>,
}

impl ControlProviders {
    /// Deployment `text` (read from `file`) with a copy of every table of ours its tiers name
    /// (see `stratus_model::with_control_plane_providers`).
    pub fn merged(&self, text: &str, file: &Path) -> Result<String, SpecErrors> {
        if self.tables.is_empty() {
            return Ok(text.to_string());
        }
        stratus_model::with_control_plane_providers(text, file, &self.tables, &self.origin)
    }

    /// Records them in the state directory for the CLI (or removes the record when none).
    pub fn publish(&self, paths: &StatePaths) -> std::io::Result<()> {
        let path = paths.path().join(PUBLISHED);
        if self.tables.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Operator's settings (host names, endpoints): for the control plane's user only.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PUBLISHED_MODE)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        std::fs::rename(&tmp, &path)
    }

    /// What the control plane of `state_dir` published; none when it published nothing.
    pub fn published(state_dir: &Path) -> ControlProviders {
        std::fs::read_to_string(state_dir.join(PUBLISHED))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// The launch checks of the deployment file at `file` (as
    /// [`DeploymentSpec::from_file_for_launch`]), knowing these providers.
    pub fn check_for_launch(
        &self,
        file: &Path,
    ) -> Result<(DeploymentSpec, Vec<SpecError>), SpecErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| SpecError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the deployment file: {e}"),
        })?;
        let text = self.merged(&text, file)?;
        DeploymentSpec::from_str_for_launch(&text, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        ControlConfig::from_str(text, Path::new("/etc/stratus/control.toml"))
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn every_key_is_read_and_paths_are_the_files_neighbours() {
        let text = "listen = \"0.0.0.0:7000\"\nadvertise = \"control.example:7000\"\n\
                    files-listen = \"0.0.0.0:7001\"\nhttp = \"127.0.0.1:8080\"\n\
                    tls-cert = \"http.pem\"\ntls-key = \"/abs/http.key\"\n\
                    agent-tls-cert = \"a.pem\"\nagent-tls-key = \"a.key\"\n\
                    cloud-files = \"files\"\n\n[providers.lab]\ntype = \"local\"\n";
        let c = ControlConfig::from_str(text, Path::new("/etc/s/c.toml")).unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:7000".parse().unwrap()));
        assert_eq!(c.advertise.unwrap().to_string(), "control.example:7000");
        assert_eq!(c.files_listen, Some("0.0.0.0:7001".parse().unwrap()));
        assert_eq!(c.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/s/http.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/abs/http.key")));
        assert_eq!(c.agent_tls_key, Some(PathBuf::from("/etc/s/a.key")));
        assert_eq!(c.cloud_files.as_deref(), Some("/etc/s/files"));
        assert_eq!(c.providers.origin, Path::new("/etc/s/c.toml"));
        assert_eq!(c.providers.tables["lab"].kind.as_str(), "local");
        let s3 = ControlConfig::from_str("cloud-files = \"s3://b/p\"\n", Path::new("c")).unwrap();
        assert_eq!(s3.cloud_files.as_deref(), Some("s3://b/p"));
        let empty = ControlConfig::from_str("", Path::new("c")).unwrap();
        assert!(empty.listen.is_none() && empty.providers.tables.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let e = errors("listen = \"0.0.0.0:7000\"\nlisten-port = 7000\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("/etc/stratus/control.toml:2:1: unknown field `listen-port`"),
            "{e:?}"
        );
        let e = errors(
            "listen = \"nowhere\"\nadvertise = \"bad host:1\"\ntls-cert = \"c.pem\"\n\
             [providers.p]\ntype = \"local\"\ntoken = \"hunter2\"\n",
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("/etc/stratus/control.toml:1:10: `nowhere`: expected"));
        assert!(e[1].starts_with("/etc/stratus/control.toml:2:13: `bad host:1`: expected"));
        assert!(
            e[2].contains(":3:12: `tls-cert` needs `tls-key` too"),
            "{e:?}"
        );
        assert!(
            e[3].contains(":6:1: setting `token` of provider `p`"),
            "{e:?}"
        );
        assert!(!e.concat().contains("hunter2"), "{e:?}");
        let e = errors("[serve]\nlisten = \"0.0.0.0:1\"\n");
        assert!(e[0].contains(":1:2: unknown field `serve`"), "{e:?}");
    }

    #[test]
    fn providers_are_published_for_the_cli_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path());
        let c =
            ControlConfig::from_str("[providers.lab]\ntype = \"local\"\n", Path::new("c")).unwrap();
        c.providers.publish(&paths).unwrap();
        assert_eq!(ControlProviders::published(dir.path()), c.providers);
        let meta = std::fs::metadata(dir.path().join(PUBLISHED)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            PUBLISHED_MODE
        );
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = ControlConfig::read(&fifo).unwrap_err().to_string();
        assert!(err.ends_with("fifo.toml: not a regular file"), "{err}");
        ControlProviders::default().publish(&paths).unwrap();
        assert_eq!(
            ControlProviders::published(dir.path()),
            ControlProviders::default()
        );
    }
}
