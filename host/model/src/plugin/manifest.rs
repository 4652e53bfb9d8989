//! `plugin.toml`: who the plugin is and what it may do.

use super::capabilities::{
    Capabilities, DirKind, MAX_DISK_MB, MAX_MEMORY_MB, MAX_PROCESSES, RunAs,
};
use crate::context::World;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

#[path = "manifest_build.rs"]
mod build;
pub use build::{Build, Language, python_module};

/// The parsed `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub plugin: PluginInfo,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// How `stratus plugin build` makes the component; absent means Rust.
    #[serde(default)]
    pub build: Build,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub world: World,
    /// The component file, relative to the package directory.
    #[serde(default = "default_component")]
    pub component: String,
}

fn default_component() -> String {
    "plugin.wasm".into()
}

/// Whether `c` would act on a terminal or hide in one (controls, bidi and zero-width marks):
/// no manifest string may hold one, since `plugin inspect` and launch errors print them to
/// the operator who is vetting the plugin.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
        )
}

/// Every string inside a JSON value.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out);
        }),
        _ => {}
    }
}

/// A manifest that cannot be used; the message names the file and, for syntax and type
/// errors, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    /// Refuses any string holding a character that acts on or hides in a terminal, showing
    /// the string escaped.
    fn printable(&self) -> Result<(), String> {
        let mut all = Vec::new();
        strings(&serde_json::to_value(self).unwrap_or_default(), &mut all);
        match all.iter().find(|s| s.chars().any(unprintable)) {
            Some(bad) => Err(format!(
                "the string \"{}\" holds a control or invisible character, which no manifest \
                 string may",
                bad.escape_default()
            )),
            None => Ok(()),
        }
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_owned(),
            source,
        })?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        };
        // toml's Display renders the line, column and a caret under the offending span.
        let manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        manifest.validate().map_err(invalid)?;
        let world = manifest.plugin.world;
        if matches!(world, World::Scaler | World::CloudDriver) {
            scaler_keys(text, world).map_err(invalid)?;
            if manifest.plugin.component.contains('/') {
                return Err(invalid(format!(
                    "plugin.component `{}` must be a file directly in a {world}'s package",
                    manifest.plugin.component
                )));
            }
        }
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        self.printable()?;
        self.build.validate()?;
        let caps = &self.capabilities;
        check_name(&self.plugin.name)?;
        let comp = Path::new(&self.plugin.component);
        if comp.as_os_str().is_empty()
            || !comp.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "plugin.component `{}` must be a relative path inside the package",
                self.plugin.component
            ));
        }
        if caps.memory_mb == 0 || caps.memory_mb > MAX_MEMORY_MB {
            return Err(format!(
                "capabilities.memory-mb must be between 1 and {MAX_MEMORY_MB}, not {}",
                caps.memory_mb
            ));
        }
        if caps.timeout_ms == 0 || caps.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "capabilities.timeout-ms must be between 1 and {MAX_TIMEOUT_MS}, not {}",
                caps.timeout_ms
            ));
        }
        if caps.output_bytes == 0 || caps.output_bytes > MAX_OUTPUT_BYTES {
            return Err(format!(
                "capabilities.output-bytes must be between 1 and {MAX_OUTPUT_BYTES}, not {}",
                caps.output_bytes
            ));
        }
        if caps.disk_mb == 0 || caps.disk_mb > MAX_DISK_MB {
            return Err(format!(
                "capabilities.disk-mb must be between 1 and {MAX_DISK_MB}, not {}",
                caps.disk_mb
            ));
        }
        if caps.processes == 0 || caps.processes > MAX_PROCESSES {
            return Err(format!(
                "capabilities.processes must be between 1 and {MAX_PROCESSES}, not {}",
                caps.processes
            ));
        }
        for p in &caps.program_env {
            if let Some(refused) = p.refused_overlap() {
                return Err(format!(
                    "capabilities.program-env entry `{p}` would pass the loader or interpreter \
                     variable {refused}, which programs never get"
                ));
            }
        }
        for (i, d) in caps.dirs.iter().enumerate() {
            if caps.dirs[..i].iter().any(|e| e.dir == d.dir) {
                return Err(format!("capabilities.dirs grants `{}` twice", d.dir));
            }
        }
        let supported = DirKind::supported_in(self.plugin.world);
        if let Some(d) = caps.dirs.iter().find(|d| !supported.contains(&d.dir)) {
            let names: Vec<String> = supported.iter().map(|k| format!("`{k}`")).collect();
            return Err(format!(
                "capabilities.dirs grants `{}`, which the {} world does not support (only {})",
                d.dir,
                self.plugin.world,
                names.join(" and ")
            ));
        }
        if caps.run_as == RunAs::Root && !RunAs::root_supported_in(self.plugin.world) {
            return Err(format!(
                "capabilities.run-as = \"root\" is only for the cm world (configuration \
                 management configures the whole server); a {} plugin's programs run as the \
                 agent's program user",
                self.plugin.world
            ));
        }
        for key in caps.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!(
                    "capabilities.env key `{key}` is not a valid variable name"
                ));
            }
        }
        Ok(())
    }
}

/// The only `[capabilities]` keys a scaler may write: a scaling rule is pure computation over
/// the window it is given, so it gets no directories, programs, network or environment. A
/// cloud driver is held to the same keys: the HTTP origins it may reach are granted by the
/// operator's provider settings, not by its manifest.
pub const SCALER_KEYS: &[&str] = &["memory-mb", "timeout-ms"];

/// Refuses a scaler or cloud-driver manifest whose `[capabilities]` holds any key but
/// [`SCALER_KEYS`], naming the key (read from the text, since a default value written out is
/// still a grant asked for).
fn scaler_keys(text: &str, world: World) -> Result<(), String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let Some(caps) = table.get("capabilities").and_then(|c| c.as_table()) else {
        return Ok(());
    };
    let why = match world {
        World::CloudDriver => {
            "a cloud driver may only set memory-mb and timeout-ms (the HTTP origins it may \
             reach are the `http` list of the provider's settings)"
        }
        _ => "a scaling rule may only set memory-mb and timeout-ms",
    };
    match caps.keys().find(|k| !SCALER_KEYS.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "capabilities.{key} is not allowed in a {world}: {why}"
        )),
        None => Ok(()),
    }
}

/// One hour: longer than any hook should take, short enough that deadlines cannot overflow.
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Captured output is held in memory per call, so it is bounded.
const MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Refuses a plugin name that is empty or holds anything but letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(name_char) {
        return Err(format!(
            "plugin.name `{name}` must be non-empty and use only letters, digits, `-`, `_`, `.`"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "plugin.name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    Ok(())
}

/// Longest plugin name: it names files and directories, and log lines carry it.
pub const MAX_NAME_LEN: usize = 64;

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
