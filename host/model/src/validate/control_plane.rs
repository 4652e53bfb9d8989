//! Providers the operator declares once, in the control plane's configuration file, for every
//! deployment to name: their `[providers.NAME]` tables follow the deployment file's rules
//! (`providers.rs`). A deployment that names one in a tier's `provider` gets a copy of its
//! table appended to its text at launch or apply, so that what is recorded is whole: the
//! deployment keeps the settings it was launched with, and every later reading of it (after
//! a restart too) knows the provider. A deployment may not declare a table of the same name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, plugins};
use crate::error::{SpecError, SpecErrors};
use crate::ids::Name;
use crate::raw::{RawProvider, SpannedMap};
use crate::spec::{ProviderSetting, ProviderSpec};

/// The configuration file's `[providers.*]`; its other keys are the caller's to check.
#[derive(Deserialize)]
struct RawProviders {
    #[serde(default)]
    providers: SpannedMap<RawProvider>,
}

/// The `[providers.NAME]` tables of the control plane's configuration `text` (read from
/// `file`), checked as a deployment file's are; every problem located at `file:line:column`.
pub fn control_plane_providers(
    text: &str,
    file: &Path,
) -> Result<BTreeMap<Name, ProviderSpec>, SpecErrors> {
    let raw: RawProviders =
        toml::from_str(text).map_err(|e| SpecError::from_toml(file, text, &e))?;
    let mut c = Checker {
        file,
        text,
        base_dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        errors: Vec::new(),
        warnings: Vec::new(),
        manifests: plugins::Manifests::new(),
        metrics_interval_ms: crate::metrics::DEFAULT_INTERVAL_MS,
    };
    let providers = c.providers(&raw.providers);
    match c.errors.is_empty() {
        true => Ok(providers),
        false => Err(SpecErrors::sorted(c.errors)),
    }
}

/// What of a deployment file this needs, read leniently: a file of another shape is left to
/// the deployment checks to report.
#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    tiers: BTreeMap<String, toml::Value>,
    #[serde(default)]
    providers: BTreeMap<Spanned<String>, toml::Value>,
}

/// The deployment `text` (read from `file`) with a copy of every control-plane provider its
/// tiers name appended. A `[providers.NAME]` table of its own under a control-plane
/// provider's name is refused (`origin` names the configuration file in the message): the
/// operator's provider is never quietly replaced by a deployment's.
pub fn with_control_plane_providers(
    text: &str,
    file: &Path,
    providers: &BTreeMap<Name, ProviderSpec>,
    origin: &Path,
) -> Result<String, SpecErrors> {
    let Ok(names) = toml::from_str::<Names>(text) else {
        return Ok(text.to_string());
    };
    let errors: Vec<SpecError> = names
        .providers
        .keys()
        .filter(|k| providers.keys().any(|n| n.as_str() == k.get_ref()))
        .map(|k| {
            let msg = format!(
                "provider `{}` is declared by the control plane's configuration {}: a \
                 deployment may name it in a tier's `provider`, not declare it again (give \
                 yours another name)",
                k.get_ref(),
                origin.display()
            );
            SpecError::at(file, text, k.span(), msg)
        })
        .collect();
    if !errors.is_empty() {
        return Err(SpecErrors::sorted(errors));
    }
    let named: BTreeSet<&str> = names
        .tiers
        .values()
        .filter_map(|t| t.get("launch")?.get("provider")?.as_str())
        .collect();
    let used: Vec<&ProviderSpec> = providers
        .values()
        .filter(|p| named.contains(p.name.as_str()))
        .collect();
    if used.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# From the control plane's configuration {}, as at launch.\n",
        origin.display()
    ));
    for p in used {
        out.push_str(&table(p));
    }
    Ok(out)
}

/// `p` as the `[providers.NAME]` table that declares it.
fn table(p: &ProviderSpec) -> String {
    let mut out = format!(
        "[providers.{}]\ntype = {}\n",
        p.name,
        quoted(p.kind.as_str())
    );
    for (k, v) in &p.settings {
        let value = match v {
            ProviderSetting::Text(s) | ProviderSetting::Key(s) => quoted(s),
            ProviderSetting::Integer(i) => i.to_string(),
            ProviderSetting::Bool(b) => b.to_string(),
            ProviderSetting::List(l) => {
                toml::Value::Array(l.iter().map(|s| s.clone().into()).collect()).to_string()
            }
        };
        out.push_str(&format!("{k} = {value}\n"));
    }
    out
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DeploymentSpec;
    use crate::validate::tests::in_temp_dir;

    const CONFIG: &str = "listen = \"0.0.0.0:7000\"\n\n[providers.lab]\ntype = \"local\"\n\
                          hosts = [\"10.0.0.1\", \"a \\\"quoted\\\" one\"]\nport = 22\n\
                          strict = true\nidentity-key = \"lab-ssh\"\n\
                          [providers.other]\ntype = \"local\"\n";

    fn deployment(provider: &str, own: &str) -> String {
        format!(
            "[deployment]\nname = \"d\"\n[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n\
             [tiers.t.launch]\nprovider = \"{provider}\"\n[services.a]\npackage = \"pkg\"\n{own}"
        )
    }

    #[test]
    fn a_deployment_naming_a_control_plane_provider_carries_its_table() {
        let config = control_plane_providers(CONFIG, Path::new("/etc/stratus.toml")).unwrap();
        assert_eq!(
            config["lab"].settings["identity-key"],
            ProviderSetting::Key("lab-ssh".into())
        );
        let text = deployment("lab", "");
        let merged = with_control_plane_providers(
            &text,
            Path::new("deploy.toml"),
            &config,
            Path::new("/etc/stratus.toml"),
        )
        .unwrap();
        assert!(merged.starts_with(&text), "{merged}");
        assert!(!merged.contains("[providers.other]"), "{merged}");
        let (_dir, spec) = in_temp_dir(&merged);
        let spec: DeploymentSpec = spec.unwrap();
        assert_eq!(spec.providers["lab"], config["lab"]);
        assert!(spec.runs_locally(spec.tier("t").unwrap()));
        // A deployment naming only its own or the built-in provider is left as it is.
        let plain = deployment("local", "");
        let same = with_control_plane_providers(&plain, Path::new("d"), &config, Path::new("c"));
        assert_eq!(same.unwrap(), plain);
    }

    #[test]
    fn a_deployment_may_not_redeclare_a_control_plane_provider() {
        let config = control_plane_providers(CONFIG, Path::new("c.toml")).unwrap();
        let text = deployment("lab", "[providers.lab]\ntype = \"local\"\n");
        let err = with_control_plane_providers(
            &text,
            Path::new("deploy.toml"),
            &config,
            Path::new("/etc/stratus.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "deploy.toml:11:12: provider `lab` is declared by the control plane's \
                 configuration /etc/stratus.toml"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_tables_in_the_configuration_are_located_as_in_a_deployment_file() {
        let text = "http = \"127.0.0.1:1\"\n[providers.local]\ntype = \"local\"\n\
                    [providers.p]\ntype = \"local\"\npassword = \"hunter2\"\n\
                    [providers.q]\ntype = \"vmware\"\n";
        let err = control_plane_providers(text, Path::new("/etc/c.toml"))
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].starts_with("/etc/c.toml:2:12: `local` is the built-in"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("/etc/c.toml:6:1: setting `password`"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("/etc/c.toml:8:8: unknown provider type"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = control_plane_providers("[providers\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().starts_with("c.toml:1:"), "{err}");
    }
}
