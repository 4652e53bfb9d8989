//! A cloud-driver provider's settings as a JSON table: `driver` (the driver's package
//! directory), `http` (the only origins it may reach), `secrets` (the name the driver knows
//! a secret by → the key-management key holding it) and everything else, which goes to the
//! driver as is. `cloud_driver_provider.rs` builds this table from a `[providers.NAME]`
//! table, where secrets are key references (`secret-access-key = "aws-secret"`); values
//! never appear in a file.

use crate::cloud_driver::{DriverConfig, Origin};
use std::path::PathBuf;

/// Keys the host reads itself; the driver gets every other key as a setting.
pub const HOST_KEYS: &[&str] = &["type", "driver", "http", "secrets"];
/// Most origins one provider may grant; a grant is a short list of API endpoints.
pub const MAX_GRANTED_ORIGINS: usize = 16;

/// A provider's settings, before its secrets are read from key management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverSettings {
    /// The driver's package directory, as written (the caller resolves it).
    pub driver: PathBuf,
    /// The driver's own settings, sorted by key.
    pub settings: Vec<(String, String)>,
    /// (name the driver knows, key-management key) pairs.
    pub secrets: Vec<(String, String)>,
    pub http: Vec<Origin>,
}

/// A setting that cannot be used; the message names the provider and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("providers.{provider}.{key}: {reason}")]
pub struct SettingsError {
    pub provider: String,
    pub key: String,
    pub reason: String,
}

impl DriverSettings {
    /// Reads the settings of provider `provider` from its table (`table` is a JSON object,
    /// the form settings take whatever file they came from).
    pub fn parse(
        provider: &str,
        table: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<DriverSettings, SettingsError> {
        let bad = |key: &str, reason: String| SettingsError {
            provider: provider.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let driver = match table.get("driver") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(_) => {
                return Err(bad(
                    "driver",
                    "must be the driver's package directory".into(),
                ));
            }
            None => {
                return Err(bad(
                    "driver",
                    "is missing: name the driver's package".into(),
                ));
            }
        };
        let http = origins(table.get("http")).map_err(|r| bad("http", r))?;
        let secrets = secret_refs(table.get("secrets")).map_err(|r| bad("secrets", r))?;
        let mut settings = Vec::new();
        for (key, value) in table {
            if HOST_KEYS.contains(&key.as_str()) {
                continue;
            }
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(bad(
                        key,
                        "must be a string, number or boolean (the driver gets text)".into(),
                    ));
                }
            };
            settings.push((key.clone(), text));
        }
        Ok(DriverSettings {
            driver,
            settings,
            secrets,
            http,
        })
    }

    /// The configuration of a call, with each secret's value looked up by `read` (key
    /// management); a missing key is an error naming it.
    pub fn config<E: std::fmt::Display>(
        &self,
        provider: &str,
        mut read: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<DriverConfig, SettingsError> {
        let mut secrets = Vec::with_capacity(self.secrets.len());
        for (name, key) in &self.secrets {
            let value = read(key).map_err(|e| SettingsError {
                provider: provider.to_owned(),
                key: format!("secrets.{name}"),
                reason: format!("cannot read key `{key}` from key management: {e}"),
            })?;
            secrets.push((name.clone(), value));
        }
        Ok(DriverConfig {
            settings: self.settings.clone(),
            secrets,
            http: self.http.clone(),
        })
    }
}

fn origins(value: Option<&serde_json::Value>) -> Result<Vec<Origin>, String> {
    let Some(serde_json::Value::Array(list)) = value else {
        return Err("is missing: list the origins the driver may reach, e.g. \
             http = [\"https://ec2.us-east-1.amazonaws.com\"]"
            .into());
    };
    if list.is_empty() || list.len() > MAX_GRANTED_ORIGINS {
        return Err(format!(
            "lists {} origins (1 to {MAX_GRANTED_ORIGINS})",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::String(s) => s.parse().map_err(|e| format!("[{i}]: {e}")),
            _ => Err(format!("[{i}] must be a string")),
        })
        .collect()
}

fn secret_refs(value: Option<&serde_json::Value>) -> Result<Vec<(String, String)>, String> {
    let table = match value {
        None => return Ok(Vec::new()),
        Some(serde_json::Value::Object(t)) => t,
        Some(_) => {
            return Err("must be a table of key-management key names, e.g. \
                 { secret-access-key = \"ec2-secret\" }"
                .into());
        }
    };
    table
        .iter()
        .map(|(name, key)| match key {
            serde_json::Value::String(k) if !k.is_empty() => Ok((name.clone(), k.clone())),
            _ => Err(format!(
                "`{name}` must name a key in key management (a string), not hold a value"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn settings_split_into_host_keys_driver_settings_and_secret_references() {
        let t = table(serde_json::json!({
            "type": "cloud-driver",
            "driver": "plugins/ec2-driver",
            "http": ["http://127.0.0.1:4566"],
            "secrets": {"secret-access-key": "ec2-secret"},
            "region": "us-east-1",
            "max": 3,
        }));
        let s = DriverSettings::parse("ec2", &t).unwrap();
        assert_eq!(s.driver, PathBuf::from("plugins/ec2-driver"));
        assert_eq!(s.http[0].to_string(), "http://127.0.0.1:4566");
        assert_eq!(
            s.secrets,
            vec![("secret-access-key".into(), "ec2-secret".into())]
        );
        assert!(s.settings.contains(&("region".into(), "us-east-1".into())));
        assert!(s.settings.contains(&("max".into(), "3".into())));
        assert!(
            !s.settings
                .iter()
                .any(|(k, _)| HOST_KEYS.contains(&k.as_str()))
        );

        let config = s.config("ec2", |key| Ok::<_, String>(format!("value-of-{key}")));
        let config = config.unwrap();
        assert_eq!(config.secrets[0].1, "value-of-ec2-secret");
        let missing = s.config("ec2", |key| Err(format!("no key {key}")));
        assert_eq!(
            missing.unwrap_err().to_string(),
            "providers.ec2.secrets.secret-access-key: cannot read key `ec2-secret` from key \
             management: no key ec2-secret"
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let base = serde_json::json!({"driver": "d", "http": ["http://127.0.0.1:1"]});
        let with = |key: &str, value: serde_json::Value| {
            let mut t = table(base.clone());
            t.insert(key.into(), value);
            DriverSettings::parse("ec2", &t).unwrap_err().to_string()
        };
        assert!(with("http", serde_json::json!([])).starts_with("providers.ec2.http: lists 0"));
        let e = with("http", serde_json::json!(["ftp://x:1"]));
        assert!(
            e.starts_with("providers.ec2.http: [0]: `ftp://x:1` is not an origin"),
            "{e}"
        );
        let e = with("secrets", serde_json::json!({"k": 5}));
        assert!(e.contains("must name a key in key management"), "{e}");
        let e = with("tags", serde_json::json!({"a": "b"}));
        assert!(e.starts_with("providers.ec2.tags: must be a string"), "{e}");
        let mut t = table(base.clone());
        t.remove("driver");
        let e = DriverSettings::parse("ec2", &t).unwrap_err().to_string();
        assert_eq!(
            e,
            "providers.ec2.driver: is missing: name the driver's package"
        );
    }
}
