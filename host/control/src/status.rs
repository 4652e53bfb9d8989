//! The operator's view of deployments, read straight from the store (no control plane needed:
//! `stratus status` works without one), shared by the application layer, `launch`'s progress
//! display and the tests' JSON contract. Fields are only ever added, never renamed.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use stratus_engine::targets::TierTarget;
use stratus_model::metrics::Sample;
use stratus_model::spec::DeploymentSpec;
use stratus_model::state::{AgentState, DeploymentState, ServiceState};
use stratus_model::step_key::StepKey;
use stratus_store::{ServerRow, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub deployments: Vec<DeploymentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentView {
    pub name: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file's `description`, as written (free text: escape it wherever it is shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Load balancers' `address:port`.
    pub endpoints: Vec<String>,
    pub tiers: Vec<TierView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierView {
    pub name: String,
    /// The tiers carrying the services this tier's services depend on, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The tier whose servers this load-balancer tier balances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<String>,
    /// How many servers the tier should have and its bounds (`stratus scale` changes them);
    /// absent when the deployment file no longer parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TierTarget>,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerView {
    pub id: String,
    pub name: String,
    pub address: String,
    /// The provider the server is on, as its tier names it (`local` by default).
    #[serde(default)]
    pub provider: String,
    /// The agent's process id (providers of type `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub agent: String,
    /// Configuration-management runs on this server, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cm: Vec<CmView>,
    /// Hooks on this server waiting to be retried because they asked to be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitView>,
    pub services: Vec<ServiceView>,
    /// Why the server is being replaced for its health (a service stayed CRITICAL through
    /// its restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<String>,
    /// The latest metrics sample of the server's own services (see `crate::metrics`): CPU
    /// in percent of one CPU, resident memory in bytes and in percent of the machine's, and
    /// when it came (Unix milliseconds); all null before the first sample and while the
    /// agent is not RUNNING.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub memory_percent: Option<f64>,
    #[serde(default)]
    pub sampled_at_ms: Option<u64>,
}

impl ServerView {
    /// `cpu 97.3 %  mem 12.4 MiB (0.2 %) at 12:01:02`, once the server has a sample.
    pub fn metrics_line(&self) -> Option<String> {
        let (cpu, bytes, percent, at) = (
            self.cpu_percent?,
            self.memory_bytes?,
            self.memory_percent?,
            self.sampled_at_ms?,
        );
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let at = stratus_engine::recovery::clock(i64::try_from(at).unwrap_or(i64::MAX));
        Some(format!(
            "cpu {cpu:.1} %  mem {mib:.1} MiB ({percent:.1} %) at {at}"
        ))
    }

    /// The same view with `sample` as its metrics.
    fn with_sample(self, sample: Option<Sample>) -> ServerView {
        ServerView {
            cpu_percent: sample.map(|s| s.cpu_percent),
            memory_bytes: sample.map(|s| s.memory_bytes),
            memory_percent: sample.map(|s| s.memory_percent),
            sampled_at_ms: sample.map(|s| s.at_ms),
            ..self
        }
    }
}

/// A hook step waiting for its next attempt (see `stratus_engine::retry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitView {
    /// The journaled step, e.g. `service/app/app-1/configure`.
    pub step: String,
    pub hook: String,
    /// `WAITING` until the next attempt is due, then `RETRYING` while it runs.
    pub state: String,
    /// The hook's message when it asked to be retried.
    pub message: String,
    /// The attempt that comes next, and the cap.
    pub next_attempt: u32,
    pub attempts: u32,
    /// Unix milliseconds, and the same as `HH:MM:SS` UTC.
    pub next_attempt_at_ms: i64,
    pub next_attempt_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmView {
    pub unit: String,
    /// `RUNNING`, `DONE` or `FAILED`.
    pub state: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub id: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last scheduled health check; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
    /// Its supervised processes that crashed and were started again (none: every process
    /// runs as started), as its agent last reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessView>,
}

/// A supervised process that exited without being asked to (see `stratus_plugin_runtime::
/// restart`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessView {
    pub name: String,
    /// `RUNNING` (started again), `RESTARTING` (waiting for its next start), or
    /// `CRASH-LOOP` (exited quickly several times in a row).
    pub state: String,
    /// Its pid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    pub quick_exits_in_a_row: u32,
    pub crash_loop: bool,
    /// e.g. `exit code 3` or `killed by signal 9 (SIGKILL)`.
    pub last_exit: String,
    /// Unix milliseconds of the last exit, and the same as `HH:MM:SS` UTC.
    pub last_exit_at_ms: i64,
    pub last_exit_at: String,
    /// When it is started next, while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_at_ms: Option<i64>,
    /// The end of its output when it last exited, redacted and bounded.
    pub output_tail: String,
}

/// A service's last health check (see `stratus_engine::health`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthView {
    /// `OK`, `WARNING`, `CRITICAL` or `UNKNOWN` (always `UNKNOWN` on a LOST server).
    pub status: String,
    pub message: String,
    /// Unix milliseconds of the last result, and the same as `HH:MM:SS` UTC.
    pub checked_at_ms: i64,
    pub checked_at: String,
    /// CRITICAL results in a row so far.
    pub critical_in_a_row: u32,
    /// Restarts for its health in all, and since it was last OK.
    pub restarts: u32,
    pub restarts_since_ok: u32,
}

/// The state directory's store opened read-only, or `None` before anything was launched there.
pub fn open_store(state_dir: &Path) -> Result<Option<Store>, StoreError> {
    let db = crate::paths::StatePaths::new(state_dir).db();
    if !db.exists() {
        return Ok(None);
    }
    Ok(Some(Store::open_read_only(db)?))
}

/// The local provider's handle of a server on a provider of type `local` (its root and agent
/// pid); `None` for other providers, whose handles only they read.
pub fn local_handle(
    spec: Option<&DeploymentSpec>,
    row: &ServerRow<AgentState>,
) -> Option<stratus_provider::LocalHandle> {
    let kind = match spec {
        Some(spec) => spec.provider_kind(&row.provider)?,
        None => row.provider.as_str(),
    };
    if kind != stratus_provider::LOCAL {
        return None;
    }
    let handle = stratus_provider::ProviderHandle {
        provider: row.provider.clone(),
        data: row.handle.clone()?,
    };
    stratus_provider::LocalHandle::of(&handle).ok()
}

/// Where a server's agent keeps its log on this machine (`<root>/agent`): only for servers on
/// a provider of type `local`; others keep theirs on their own host.
pub fn agent_dir(store: &Store, row: &ServerRow<AgentState>) -> Option<std::path::PathBuf> {
    let dep = store
        .deployment::<serde_json::Value>(&row.deployment)
        .ok()??;
    let spec = DeploymentSpec::from_str(&dep.spec_toml, &dep.spec_path).ok();
    Some(local_handle(spec.as_ref(), row)?.root.join("agent"))
}

/// Every deployment (or only the one named `only`) with its tiers, servers and services.
pub fn status(store: &Store, only: Option<&str>) -> Result<StatusView, StoreError> {
    let mut deployments = Vec::new();
    for row in store.deployments::<DeploymentState>()? {
        if only.is_some_and(|n| n != row.name) {
            continue;
        }
        let spec = DeploymentSpec::from_str(&row.spec_toml, &row.spec_path).ok();
        let servers = store.servers::<AgentState>(&row.name)?;
        let services = store.service_instances::<ServiceState>(&row.name)?;
        let journal = stratus_engine::steps::journal_of(store, &row.name)?;
        let steps = store.steps(&journal)?;
        let waits = stratus_engine::retry::current_waits(&steps);
        // Indexed once: a per-server scan of every step and service made the view quadratic
        // (seconds per call at a thousand servers, and `launch` polls it).
        let mut cm = cm_runs(&steps);
        let mut services_of: HashMap<&str, Vec<_>> = HashMap::new();
        for i in &services {
            services_of.entry(i.server_id.as_str()).or_default().push(i);
        }
        let mut tiers: Vec<TierView> = Vec::new();
        let tier_names: Vec<String> = match &spec {
            Some(s) => s.tiers.keys().map(|t| t.to_string()).collect(),
            None => servers.iter().map(|s| s.tier.clone()).collect(),
        };
        for tier in tier_names {
            if tiers.iter().any(|t| t.name == tier) {
                continue;
            }
            // Servers that left a live deployment (scaled down, replaced) are history; a
            // terminated deployment still shows what it had.
            let shown = |s: &&ServerRow<AgentState>| {
                s.tier == tier
                    && (s.agent_state != AgentState::Terminated
                        || row.state == DeploymentState::Terminated)
            };
            let mut tier_servers: Vec<ServerView> = servers
                .iter()
                .filter(shown)
                .map(|s| (s, crate::supervision::report_of(store, &journal, &s.id)))
                .map(|(s, crashed)| {
                    ServerView {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        address: s.address.clone(),
                        provider: s.provider.clone(),
                        pid: local_handle(spec.as_ref(), s).map(|h| h.pid),
                        agent: s.agent_state.name().to_string(),
                        cm: cm.remove(s.id.as_str()).unwrap_or_default(),
                        waiting: waits_on(&waits, &s.id),
                        services: services_of
                            .get(s.id.as_str())
                            .into_iter()
                            .flatten()
                            .map(|i| ServiceView {
                                name: i.service.clone(),
                                id: i.service_id.clone(),
                                // Nobody can tell what runs on a server whose agent is lost,
                                // or on one being ended whose services were not stopped.
                                state: match (s.agent_state, &i.state) {
                                    (AgentState::Lost, _) => "UNKNOWN".to_string(),
                                    (AgentState::Ending, ServiceState::Stopped) => {
                                        i.state.name().to_string()
                                    }
                                    (AgentState::Ending, _) => "UNKNOWN".to_string(),
                                    _ => i.state.name().to_string(),
                                },
                                reason: match &i.state {
                                    ServiceState::Failed { reason } => Some(reason.clone()),
                                    _ => None,
                                },
                                health: health_view(store, &journal, s, &i.service),
                                processes: process_views(&crashed, &i.service),
                            })
                            .collect(),
                        replacing: stratus_engine::health::condemned(store, &journal, &s.id)
                            .ok()
                            .flatten(),
                        cpu_percent: None,
                        memory_bytes: None,
                        memory_percent: None,
                        sampled_at_ms: None,
                    }
                    .with_sample(sample_of(store, &journal, s))
                })
                .collect();
            tier_servers.sort_by_key(|s| {
                s.id.rsplit_once('-')
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .unwrap_or(0)
            });
            let target = match &spec {
                Some(spec) => tier_target(store, &journal, spec, &tier)?,
                None => None,
            };
            let (depends_on, balances) = spec.as_ref().map_or_else(Default::default, |spec| {
                (depends_on_tiers(spec, &tier), balanced_tier(spec, &tier))
            });
            tiers.push(TierView {
                name: tier,
                depends_on,
                balances,
                target,
                servers: tier_servers,
            });
        }
        let endpoints = match (&spec, &row.state) {
            (Some(spec), DeploymentState::Running) => endpoints(spec, &tiers),
            _ => Vec::new(),
        };
        let reason = match &row.state {
            DeploymentState::Failed { reason } | DeploymentState::Degraded { reason } => {
                Some(reason.clone())
            }
            _ => None,
        };
        deployments.push(DeploymentView {
            name: row.name.clone(),
            state: row.state.name().to_string(),
            reason,
            description: spec.as_ref().and_then(|s| s.description.clone()),
            endpoints,
            tiers,
        });
    }
    Ok(StatusView { deployments })
}

/// The latest metrics of `server` while its agent is RUNNING (a LOST agent's are stale, a
/// TERMINATED one's history).
fn sample_of(store: &Store, journal: &str, server: &ServerRow<AgentState>) -> Option<Sample> {
    if server.agent_state != AgentState::Running {
        return None;
    }
    crate::metrics::latest_stored(store, journal, &server.id)
}

/// The crashed processes of `service` in its server's last supervision report.
fn process_views(report: &stratus_protocol::SupervisionReport, service: &str) -> Vec<ProcessView> {
    report
        .processes
        .iter()
        .filter(|p| p.owner == service)
        .map(|p| ProcessView {
            name: p.name.clone(),
            state: match (p.crash_loop, p.pid) {
                (true, _) => "CRASH-LOOP",
                (false, Some(_)) => "RUNNING",
                (false, None) => "RESTARTING",
            }
            .to_string(),
            pid: p.pid,
            restarts: p.restarts,
            quick_exits_in_a_row: p.quick_exits_in_a_row,
            crash_loop: p.crash_loop,
            last_exit: p.last_exit.clone(),
            last_exit_at_ms: p.last_exit_at_ms,
            last_exit_at: stratus_engine::recovery::clock(p.last_exit_at_ms),
            next_start_at_ms: p.next_start_at_ms,
            output_tail: p.output_tail.clone(),
        })
        .collect()
}

/// The last health of `service` on `server`; UNKNOWN whatever it was while the server is
/// LOST, since nobody can tell.
fn health_view(
    store: &Store,
    journal: &str,
    server: &ServerRow<AgentState>,
    service: &str,
) -> Option<HealthView> {
    let rec = stratus_engine::health::health_of(store, journal, &server.id, service)
        .ok()
        .flatten()?;
    let (status, message) = match server.agent_state {
        AgentState::Lost => ("UNKNOWN", format!("server {} is lost", server.id)),
        AgentState::Ending => ("UNKNOWN", format!("server {} is being ended", server.id)),
        _ => (stratus_engine::health::status_word(rec.status), rec.message),
    };
    Some(HealthView {
        status: status.to_string(),
        message,
        checked_at_ms: rec.checked_at_ms,
        checked_at: stratus_engine::recovery::clock(rec.checked_at_ms),
        critical_in_a_row: rec.critical_in_a_row,
        restarts: rec.restarts,
        restarts_since_ok: rec.restarts_since_ok,
    })
}

/// A tier's target as `Engine::targets` gives it (what `stratus scale` stored in this launch,
/// else the file's bounds), read from the store alone so no control plane is needed.
fn tier_target(
    store: &Store,
    journal: &str,
    spec: &DeploymentSpec,
    tier: &str,
) -> Result<Option<TierTarget>, StoreError> {
    let Some(tier_spec) = spec.tier(tier) else {
        return Ok(None);
    };
    let stored = store
        .meta(&format!("target/{journal}/{tier}"))?
        .and_then(|t| serde_json::from_str::<TierTarget>(&t).ok());
    Ok(Some(
        stored.unwrap_or_else(|| TierTarget::of_spec(tier_spec)),
    ))
}

/// The tiers carrying what `tier`'s services depend on (each once, never `tier` itself).
fn depends_on_tiers(spec: &DeploymentSpec, tier: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for dep in spec.services_of(tier).iter().flat_map(|s| &s.depends_on) {
        let Some(on) = spec.tier_of(dep.service.as_str()) else {
            continue;
        };
        let on = on.name.to_string();
        if on != tier && !out.contains(&on) {
            out.push(on);
        }
    }
    out
}

/// The tier carrying the service `tier` balances, for a load-balancer tier.
fn balanced_tier(spec: &DeploymentSpec, tier: &str) -> Option<String> {
    let balanced = spec.tier(tier)?.balances.as_ref()?;
    spec.tier_of(balanced.service.as_str())
        .map(|t| t.name.to_string())
}

/// Every load-balancer server's address with its service's first public port.
fn endpoints(spec: &DeploymentSpec, tiers: &[TierView]) -> Vec<String> {
    let mut out = Vec::new();
    for tier in spec.tiers.values().filter(|t| t.balances.is_some()) {
        let port = spec
            .services_of(tier.name.as_str())
            .iter()
            .find_map(|s| s.ports.first().map(|p| p.public));
        let Some(port) = port else { continue };
        for t in tiers.iter().filter(|t| t.name == tier.name.as_str()) {
            for s in &t.servers {
                out.push(format!("{}:{port}", s.address));
            }
        }
    }
    out
}

/// The waits of hooks on `server`.
fn waits_on(waits: &[stratus_engine::retry::RetryWait], server: &str) -> Vec<WaitView> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    waits
        .iter()
        .filter(|w| w.server == server)
        .map(|w| WaitView {
            step: w.step.clone(),
            hook: w.hook.clone(),
            state: if now < w.next_at_ms {
                "WAITING"
            } else {
                "RETRYING"
            }
            .into(),
            message: w.message.clone(),
            next_attempt: w.attempt + 1,
            attempts: w.attempts,
            next_attempt_at_ms: w.next_at_ms,
            next_attempt_at: w.next_at_text(),
        })
        .collect()
}

/// CM runs per server, read from the journal's `server/<id>/cm/<unit>/run` steps.
fn cm_runs(steps: &[stratus_store::StepRow]) -> HashMap<String, Vec<CmView>> {
    let mut out: HashMap<String, Vec<CmView>> = HashMap::new();
    for step in steps {
        let Ok(StepKey::Cm {
            server: on,
            unit,
            action,
        }) = step.key.parse::<StepKey>()
        else {
            continue;
        };
        if action.as_str() != "run" {
            continue;
        }
        let (state, summary) = match step.status {
            stratus_store::StepState::Started => ("RUNNING", String::new()),
            stratus_store::StepState::Completed => (
                "DONE",
                step.outcome
                    .as_ref()
                    .and_then(|o| o.pointer("/outcome/report/summary"))
                    .and_then(|s| s.as_str())
                    .unwrap_or_default()
                    .to_string(),
            ),
            stratus_store::StepState::Failed => ("FAILED", step.error.clone().unwrap_or_default()),
        };
        out.entry(on.to_string()).or_default().push(CmView {
            unit: unit.to_string(),
            state: state.into(),
            summary,
        });
    }
    out
}
