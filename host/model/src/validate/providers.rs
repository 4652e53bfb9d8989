//! Rules of `[providers.NAME]` tables and of the names tiers give in `provider`: a known
//! `type`, typed settings, and secrets only as references to keys in key management.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::{Checker, in_file_order};
use crate::ids::Name;
use crate::raw::{RawFile, RawProvider, SpannedMap};
use crate::spec::{DEFAULT_PROVIDER, PROVIDER_TYPES, ProviderSetting, ProviderSpec};

/// Most settings one provider table may have: far more than any provider takes, few enough
/// that a runaway generated file is refused here.
pub const MAX_PROVIDER_SETTINGS: usize = 64;

/// Longest string a provider setting (or list entry) may hold, in bytes: room for a long
/// endpoint URL or host name, not for a file's contents pasted in.
pub const MAX_PROVIDER_SETTING_BYTES: usize = 4096;

/// Longest key name a key reference may give (key management's names are file names).
const MAX_KEY_NAME: usize = 128;

/// Setting names that would hold a secret inline: refused, the secret goes in key management.
const SECRET_NAMES: &[&str] = &["password", "secret", "token", "passphrase", "private-key"];

impl Checker<'_> {
    /// Every `[providers.NAME]` table, in file order.
    pub(super) fn providers(
        &mut self,
        tables: &SpannedMap<RawProvider>,
    ) -> BTreeMap<Name, ProviderSpec> {
        let mut out = BTreeMap::new();
        if tables.len() > MAX_PROVIDER_SETTINGS {
            let (key, _) = in_file_order(tables)[MAX_PROVIDER_SETTINGS];
            let msg = format!("more than {MAX_PROVIDER_SETTINGS} [providers.*] tables");
            self.error(key.span(), msg);
        }
        for (key, table) in in_file_order(tables) {
            if let Some(p) = self.provider(key, table) {
                out.insert(p.name.clone(), p);
            }
        }
        out
    }

    fn provider(
        &mut self,
        key: &Spanned<String>,
        table: &Spanned<RawProvider>,
    ) -> Option<ProviderSpec> {
        let name = self.name(key, "provider name:")?;
        if name.as_str() == DEFAULT_PROVIDER {
            let msg =
                "`local` is the built-in provider and needs no table; give yours another name";
            self.error(key.span(), msg);
            return None;
        }
        let kind = self.provider_type(&name, table);
        let entries = in_file_order(table.get_ref());
        if entries.len() > MAX_PROVIDER_SETTINGS + 1 {
            let msg = format!("provider `{name}` has more than {MAX_PROVIDER_SETTINGS} settings");
            self.error(entries[MAX_PROVIDER_SETTINGS + 1].0.span(), msg);
        }
        let mut settings = BTreeMap::new();
        for (k, v) in entries.into_iter().filter(|(k, _)| k.get_ref() != "type") {
            if let Some(value) = self.provider_setting(&name, k, v) {
                settings.insert(k.get_ref().clone(), value);
            }
        }
        Some(ProviderSpec {
            name,
            kind: kind?,
            settings,
        })
    }

    /// `type = "…"`: required, one of [`PROVIDER_TYPES`].
    fn provider_type(&mut self, name: &Name, table: &Spanned<RawProvider>) -> Option<Name> {
        let known = PROVIDER_TYPES.join("`, `");
        let Some((_, value)) = table.get_ref().iter().find(|(k, _)| k.get_ref() == "type") else {
            let msg = format!("provider `{name}` needs a `type` (one of `{known}`)");
            self.error(table.span(), msg);
            return None;
        };
        match value.get_ref().as_str() {
            Some(t) if PROVIDER_TYPES.contains(&t) => Name::new(t).ok(),
            Some(t) => {
                let msg = format!("unknown provider type `{t}` (expected one of `{known}`)");
                self.error(value.span(), msg);
                None
            }
            None => {
                let msg = format!("the `type` of provider `{name}` must be a string");
                self.error(value.span(), msg);
                None
            }
        }
    }

    fn provider_setting(
        &mut self,
        provider: &Name,
        key: &Spanned<String>,
        value: &Spanned<toml::Value>,
    ) -> Option<ProviderSetting> {
        let k = key.get_ref().as_str();
        if Name::new(k).is_err() {
            let msg = format!(
                "invalid setting name `{k}` of provider `{provider}`: expected lowercase \
                 letters, digits and `-`"
            );
            self.error(key.span(), msg);
            return None;
        }
        if is_secret_name(k) {
            let msg = format!(
                "setting `{k}` of provider `{provider}` would put a secret in the deployment \
                 file: store it in key management and name the key with `{k}-key = \"<key name>\"`"
            );
            self.error(key.span(), msg);
            return None;
        }
        let span = value.span();
        let setting = match value.get_ref() {
            toml::Value::String(s) => ProviderSetting::Text(s.clone()),
            toml::Value::Integer(i) => ProviderSetting::Integer(*i),
            toml::Value::Boolean(b) => ProviderSetting::Bool(*b),
            toml::Value::Array(items) => {
                let strings: Option<Vec<String>> =
                    items.iter().map(|i| i.as_str().map(String::from)).collect();
                match strings {
                    Some(list) => ProviderSetting::List(list),
                    None => return self.bad_setting(provider, k, span),
                }
            }
            _ => return self.bad_setting(provider, k, span),
        };
        self.setting_strings_fit(provider, k, &setting, span.clone())?;
        if k == "key" || k.ends_with("-key") {
            return self.key_reference(provider, k, setting, span);
        }
        Some(setting)
    }

    fn bad_setting(
        &mut self,
        provider: &Name,
        k: &str,
        span: Range<usize>,
    ) -> Option<ProviderSetting> {
        let msg = format!(
            "setting `{k}` of provider `{provider}` must be a string, an integer, a boolean or \
             a list of strings"
        );
        self.error(span, msg);
        None
    }

    /// Every string of the setting: short, and never a private key pasted in (the value is
    /// not repeated in the message, which is printed and logged).
    fn setting_strings_fit(
        &mut self,
        provider: &Name,
        k: &str,
        setting: &ProviderSetting,
        span: Range<usize>,
    ) -> Option<()> {
        let strings: Vec<&str> = match setting {
            ProviderSetting::Text(s) => vec![s.as_str()],
            ProviderSetting::List(l) => l.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        if strings.iter().any(|s| looks_like_private_key(s)) {
            let msg = format!(
                "setting `{k}` of provider `{provider}` holds what looks like a private key: \
                 secrets go in key management, named here with `key = \"<key name>\"`"
            );
            self.error(span, msg);
            return None;
        }
        if strings.iter().any(|s| s.len() > MAX_PROVIDER_SETTING_BYTES) {
            let msg = format!(
                "setting `{k}` of provider `{provider}` is longer than \
                 {MAX_PROVIDER_SETTING_BYTES} bytes"
            );
            self.error(span, msg);
            return None;
        }
        Some(())
    }

    /// `key = "ssh-key"`, `secret-access-key = "aws"`: the name of a key in key management.
    fn key_reference(
        &mut self,
        provider: &Name,
        k: &str,
        setting: ProviderSetting,
        span: Range<usize>,
    ) -> Option<ProviderSetting> {
        match setting {
            ProviderSetting::Text(name) if is_key_name(&name) => Some(ProviderSetting::Key(name)),
            _ => {
                let msg = format!(
                    "setting `{k}` of provider `{provider}` names a key in key management: \
                     expected a key name of letters, digits, `-`, `_`, `.` and `/` (at most \
                     {MAX_KEY_NAME} characters), not the secret itself"
                );
                self.error(span, msg);
                None
            }
        }
    }

    /// Every tier's `provider` is `local` or one of the file's `[providers.*]` tables.
    pub(super) fn tier_providers(&mut self, raw: &RawFile) {
        let declared: Vec<&str> = raw.providers.keys().map(|k| k.get_ref().as_str()).collect();
        for (_, tier) in in_file_order(&raw.tiers) {
            let launch = tier.get_ref().launch.as_ref();
            let Some(p) = launch.and_then(|l| l.provider.as_ref()) else {
                continue;
            };
            let name = p.get_ref().as_str();
            if name == DEFAULT_PROVIDER || declared.contains(&name) || Name::new(name).is_err() {
                continue;
            }
            let expected = if declared.is_empty() {
                format!("`{DEFAULT_PROVIDER}` or a [providers.{name}] table")
            } else {
                format!("`{DEFAULT_PROVIDER}` or one of `{}`", declared.join("`, `"))
            };
            self.error(
                p.span(),
                format!("unknown provider `{name}` (expected {expected})"),
            );
        }
    }
}

/// `password`, `api-token`, `client-secret`…: names whose values are secrets.
fn is_secret_name(k: &str) -> bool {
    SECRET_NAMES
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("-{s}")))
}

/// A PEM or OpenSSH private key, or a PuTTY key file.
fn looks_like_private_key(s: &str) -> bool {
    s.contains("PRIVATE KEY") || s.contains("-----BEGIN") || s.starts_with("PuTTY-User-Key-File")
}

fn is_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_NAME
        && !s.starts_with(['/', '.'])
        && !s.split('/').any(|part| part.is_empty() || part == "..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

#[cfg(test)]
mod tests {
    use crate::spec::ProviderSetting;
    use crate::validate::tests::{HEAD, in_temp_dir};

    const TIER: &str = "[tiers.t]\nmin = 1\nmax = 1\nservices = [\"a\"]\n";
    const SERVICE: &str = "[services.a]\npackage = \"pkg\"\n";

    fn file(launch: &str, providers: &str) -> String {
        format!("{HEAD}{TIER}{launch}{SERVICE}{providers}")
    }

    /// The errors of `text`, each as `line:column: message`.
    fn errors(text: &str) -> Vec<String> {
        let (_dir, result) = in_temp_dir(text);
        result
            .unwrap_err()
            .lines()
            .map(|l| l.rsplit_once("deploy.toml:").unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn a_tier_may_use_a_declared_local_provider_with_typed_settings() {
        let text = file(
            "[tiers.t.launch]\nprovider = \"here\"\n",
            "[providers.here]\ntype = \"local\"\n[providers.far]\ntype = \"local\"\n\
             hosts = [\"10.0.0.1\", \"10.0.0.2\"]\nport = 22\nstrict = true\nkey = \"ssh-key\"\n\
             user = \"deploy\"\n",
        );
        let (_dir, spec) = in_temp_dir(&text);
        let spec = spec.unwrap();
        assert_eq!(spec.tier("t").unwrap().launch.provider.as_str(), "here");
        assert!(spec.runs_locally(spec.tier("t").unwrap()));
        let far = &spec.providers["far"].settings;
        assert_eq!(far["key"], ProviderSetting::Key("ssh-key".into()));
        assert_eq!(far["port"], ProviderSetting::Integer(22));
        assert_eq!(far["strict"], ProviderSetting::Bool(true));
        assert_eq!(far["user"], ProviderSetting::Text("deploy".into()));
        assert_eq!(
            far["hosts"],
            ProviderSetting::List(vec!["10.0.0.1".into(), "10.0.0.2".into()])
        );
    }

    #[test]
    fn an_unknown_provider_name_is_located() {
        assert_eq!(
            errors(&file("[tiers.t.launch]\nprovider = \"ec2\"\n", "")),
            ["8:12: unknown provider `ec2` (expected `local` or a [providers.ec2] table)"]
        );
        assert_eq!(
            errors(&file(
                "[tiers.t.launch]\nprovider = \"ec2\"\n",
                "[providers.here]\ntype = \"local\"\n"
            )),
            ["8:12: unknown provider `ec2` (expected `local` or one of `here`)"]
        );
    }

    #[test]
    fn bad_tables_are_located() {
        let text = file(
            "",
            "[providers.local]\ntype = \"local\"\n\
             [providers.a]\nhosts = [\"x\"]\n\
             [providers.b]\ntype = \"vmware\"\n\
             [providers.c]\ntype = \"local\"\nweights = [1, 2]\nwhen = 1979-05-27\n\
             [providers.d]\ntype = 7\n",
        );
        assert_eq!(
            errors(&text),
            [
                "9:12: `local` is the built-in provider and needs no table; give yours another name",
                "11:1: provider `a` needs a `type` (one of `local`, `cloud-driver`, `ssh`)",
                "14:8: unknown provider type `vmware` (expected one of `local`, `cloud-driver`, `ssh`)",
                "17:11: setting `weights` of provider `c` must be a string, an integer, a boolean or a list of strings",
                "18:8: setting `when` of provider `c` must be a string, an integer, a boolean or a list of strings",
                "20:8: the `type` of provider `d` must be a string",
            ]
        );
    }

    #[test]
    fn secrets_are_refused_inline_and_never_repeated() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\n-----END OPENSSH PRIVATE KEY-----";
        let text = file(
            "",
            &format!(
                "[providers.p]\ntype = \"local\"\npassword = \"hunter2\"\napi-token = \"t\"\n\
                 identity = \"{pem}\"\nkey = \"{pem}\"\nhosts = [\"a\", \"{pem}\"]\n\
                 secret-key = \"../../etc/shadow\"\n"
            ),
        );
        let found = errors(&text);
        assert_eq!(found.len(), 6, "{found:#?}");
        assert!(
            found[0].starts_with("11:1: setting `password` of provider `p` would put a secret")
        );
        assert!(
            found[0].contains("`password-key = \"<key name>\"`"),
            "{}",
            found[0]
        );
        assert!(
            found[1].starts_with("12:1: setting `api-token`"),
            "{}",
            found[1]
        );
        for line in &found[2..5] {
            assert!(line.contains("looks like a private key"), "{line}");
        }
        assert!(found[5].starts_with("16:14: setting `secret-key` of provider `p` names a key"));
        for line in &found {
            assert!(
                !line.contains("b3BlbnNzaC1rZXktdjEAAAAA") && !line.contains("hunter2"),
                "{line}"
            );
        }
    }
}
