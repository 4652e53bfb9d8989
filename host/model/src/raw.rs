//! The deployment file exactly as written: serde shapes with the spans that semantic checks
//! point at. Only `validate` reads these; everyone else uses the types in `spec`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// Keys of TOML tables come sorted by name from `toml`; their spans recover file order.
pub(crate) type SpannedMap<T> = BTreeMap<Spanned<String>, Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawFile {
    pub deployment: RawDeployment,
    #[serde(default)]
    pub tiers: SpannedMap<RawTier>,
    #[serde(default)]
    pub services: SpannedMap<RawService>,
    #[serde(default)]
    pub personalities: SpannedMap<RawPersonality>,
    /// `[providers.NAME]`: `type` and free settings, checked in `validate/providers.rs`.
    #[serde(default)]
    pub providers: SpannedMap<RawProvider>,
}

/// A `[providers.NAME]` table as written: every key with its value's span.
pub(crate) type RawProvider = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// A script personality: components (cm-world packages) run in order on a new server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawPersonality {
    pub components: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDeployment {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// How often agents report CPU and memory, e.g. `"5s"`.
    #[serde(default)]
    pub metrics_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTier {
    pub min: Spanned<Count>,
    pub max: Spanned<Count>,
    pub services: Vec<Spanned<String>>,
    #[serde(default)]
    pub launch: Option<RawLaunch>,
    #[serde(default)]
    pub balances: Option<Spanned<String>>,
    #[serde(default)]
    pub balance_port: Option<Spanned<String>>,
    /// `"on"` (default) or `"off"`.
    #[serde(default)]
    pub recovery: Option<Spanned<String>>,
    #[serde(default)]
    pub recovery_grace: Option<Spanned<String>>,
    #[serde(default)]
    pub scaling: Option<Spanned<RawScaling>>,
}

/// `[tiers.x.scaling]`: thresholds in percent, periods as waits (`"2m"`), a custom rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawScaling {
    #[serde(default)]
    pub cpu_high: Option<Spanned<i64>>,
    #[serde(default)]
    pub cpu_low: Option<Spanned<i64>>,
    #[serde(default)]
    pub ram_high: Option<Spanned<i64>>,
    #[serde(default)]
    pub ram_low: Option<Spanned<i64>>,
    #[serde(default)]
    pub breach: Option<Spanned<String>>,
    #[serde(default)]
    pub cooldown: Option<Spanned<String>>,
    #[serde(default)]
    pub settle: Option<Spanned<String>>,
    #[serde(default)]
    pub increment: Option<Spanned<i64>>,
    #[serde(default)]
    pub rule: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawLaunch {
    #[serde(default)]
    pub provider: Option<Spanned<String>>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub cm: Option<RawCm>,
    #[serde(default)]
    pub personality: Option<Spanned<String>>,
    #[serde(default)]
    pub boot_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCm {
    pub adapter: Spanned<String>,
    pub package: Spanned<String>,
    /// A directory of inputs for the tool (manifests, playbooks, cookbooks).
    #[serde(default)]
    pub files: Option<Spanned<String>>,
    #[serde(default)]
    pub run_list: Vec<String>,
    #[serde(default)]
    pub settings: BTreeMap<Spanned<String>, Setting>,
    /// `program-user` takes a manifest's `run-as = "root"` away.
    #[serde(default)]
    pub run_as: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawService {
    pub package: Spanned<String>,
    #[serde(default)]
    pub data_source: Option<RawDataSource>,
    #[serde(default)]
    pub ports: SpannedMap<RawPort>,
    #[serde(default)]
    pub credentials: Vec<Spanned<String>>,
    #[serde(default)]
    pub settings: BTreeMap<Spanned<String>, Setting>,
    #[serde(default)]
    pub capabilities: Option<RawCapabilities>,
    #[serde(default)]
    pub depends_on: Vec<Spanned<RawDependency>>,
    #[serde(default)]
    pub retry: Option<Spanned<RawRetry>>,
    #[serde(default)]
    pub health: Option<Spanned<RawHealth>>,
}

/// `health = { interval = "10s", timeout = "2s", unhealthy-after = 3, restarts = 3 }`; a
/// missing key keeps its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawHealth {
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub unhealthy_after: Option<Spanned<i64>>,
    #[serde(default)]
    pub restarts: Option<Spanned<i64>>,
}

/// `retry = { attempts = 8, initial = "500ms", max = "10s" }`; a missing key keeps its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRetry {
    #[serde(default)]
    pub attempts: Option<Spanned<i64>>,
    #[serde(default)]
    pub initial: Option<Spanned<String>>,
    #[serde(default)]
    pub max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDataSource {
    pub image: Spanned<String>,
    pub database: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCapabilities {
    #[serde(default)]
    pub memory_mb: Option<Spanned<u64>>,
    #[serde(default)]
    pub timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub output_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub dirs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub programs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub network: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub env: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub program_env: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub processes: Option<Spanned<u64>>,
    #[serde(default)]
    pub disk_mb: Option<Spanned<u64>>,
}

/// A port: `http = 8080` (public = private) or `http = { private = 8080, public = 80 }`.
#[derive(Debug)]
pub(crate) enum RawPort {
    Number(i64),
    Table(PortTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortTable {
    pub private: Spanned<i64>,
    #[serde(default)]
    pub public: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a table { private = <port>, public = <port> }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawPort, A::Error> {
                PortTable::deserialize(MapAccessDeserializer::new(map)).map(RawPort::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// A dependency: `"x"` or `{ service = "x" }` (on the service) or `{ data-source = "x" }`.
#[derive(Debug)]
pub(crate) struct RawDependency {
    pub data_source: bool,
    pub service: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DependencyTable {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    data_source: Option<String>,
}

impl<'de> Deserialize<'de> for RawDependency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDependency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a service name, { service = \"name\" } or { data-source = \"name\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDependency, E> {
                Ok(RawDependency {
                    data_source: false,
                    service: v.to_string(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDependency, A::Error> {
                let t = DependencyTable::deserialize(MapAccessDeserializer::new(map))?;
                match (t.service, t.data_source) {
                    (Some(service), None) => Ok(RawDependency {
                        data_source: false,
                        service,
                    }),
                    (None, Some(service)) => Ok(RawDependency {
                        data_source: true,
                        service,
                    }),
                    _ => Err(de::Error::custom(
                        "expected exactly one of `service` or `data-source`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A setting value: strings as written; integers, floats and booleans as TOML prints them,
/// because templates and `enstratus.cfg` only carry strings.
#[derive(Debug)]
pub(crate) struct Setting(pub String);

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Setting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, integer, float or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number of servers, with an error message an operator understands (not "expected u32").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of servers (0 or more)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}
