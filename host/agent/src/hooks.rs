//! Running hooks on this server. Each call id runs at most once: a repeated request (the
//! control plane restarted, or the connection dropped mid-call) waits for or returns the first
//! run's report, kept in memory and under `agent/calls/` so it survives the agent too.

use crate::agent::AgentConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratus_model::context::HookCall;
use stratus_plugin_runtime::{
    Access, CallEnv, CallFailure, Capabilities, CapabilityOverride, HookFailure, HookOutcome,
    HookValue, Labels, Package, Plugin, Runtime, Supervisor, dirs_of,
};
use stratus_protocol::{AgentReply, HookReport, HookResult, LogLine};
use tokio::sync::{Mutex, OnceCell};

/// Where the agent keeps a copy of every installed package that no plugin can write (see
/// `CallEnv::sealed_package`), mirrored by package directory. Plugins are loaded from it.
pub(crate) const SEALED: &str = "agent/sealed";

/// The sealed copy of the package installed at `package_dir`, relative to the server root.
pub(crate) fn sealed_of(package_dir: &str) -> String {
    format!("{SEALED}/{package_dir}")
}

pub struct Hooks {
    pub(crate) cfg: AgentConfig,
    runtime: Runtime,
    pub(crate) supervisor: Supervisor,
    plugins: Mutex<HashMap<PathBuf, Plugin>>,
    /// Each sealed package as opened at its install, with its component's SHA-256 as
    /// verified when this agent fetched it: such a plugin loads from the code cache without
    /// its manifest or component being read again.
    verified: Mutex<HashMap<PathBuf, (Package, String)>>,
    /// Held to write an installed package, shared to load a plugin (see `install_package`).
    pub(crate) installing: tokio::sync::RwLock<()>,
    calls: Mutex<HashMap<String, Arc<OnceCell<AgentReply>>>>,
    /// The services checked on a schedule (see `health.rs`).
    pub(crate) health: crate::health::Watches,
    /// The services whose disk use is checked while their processes run.
    pub(crate) disk: crate::disk_watch::DiskWatch,
    /// How often the services' metrics are reported (see `metrics.rs`).
    pub(crate) metrics: crate::metrics::Interval,
    /// Where packages and data sources are fetched from (see `requests.rs`).
    pub(crate) files: crate::requests::FileSource,
    /// The credential presented to the control plane and its file endpoint.
    pub(crate) credentials: crate::credential::Credentials,
}

impl Hooks {
    pub fn new(cfg: AgentConfig, runtime: Runtime, supervisor: Supervisor) -> Hooks {
        let launch = cfg.bootstrap.credential.clone();
        Hooks {
            credentials: crate::credential::Credentials::load(&cfg.root, launch),
            cfg,
            runtime,
            supervisor,
            plugins: Mutex::default(),
            verified: Mutex::default(),
            installing: tokio::sync::RwLock::default(),
            calls: Mutex::default(),
            health: crate::health::Watches::default(),
            disk: crate::disk_watch::DiskWatch::default(),
            metrics: crate::metrics::Interval::default(),
            files: crate::requests::FileSource::default(),
        }
    }

    /// A package directory is being (re)written: its plugin must be loaded afresh.
    pub(crate) async fn forget_plugin(&self, dir: &Path) {
        self.plugins.lock().await.remove(dir);
        self.verified.lock().await.remove(dir);
    }

    /// The package sealed at `dir`, whose component was verified as `sha256` when fetched.
    pub(crate) async fn verified_package(&self, dir: &Path, package: Package, sha256: String) {
        self.verified
            .lock()
            .await
            .insert(dir.to_path_buf(), (package, sha256));
    }

    /// The report remembered on disk for a call, if any; with `rerun_failed`, a failure is
    /// forgotten (in memory and on disk) and `None` returned, so the call runs again.
    async fn remembered(
        &self,
        call_id: &str,
        file: &Path,
        rerun_failed: bool,
    ) -> Option<AgentReply> {
        let failed = |r: &AgentReply| matches!(r, AgentReply::Hook { report } if matches!(report.outcome, HookResult::Failed { .. }));
        if rerun_failed {
            let mut calls = self.calls.lock().await;
            if calls.get(call_id).and_then(|c| c.get()).is_some_and(failed) {
                calls.remove(call_id);
            }
        }
        let on_disk = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str::<AgentReply>(&t).ok())?;
        if rerun_failed && failed(&on_disk) {
            let _ = std::fs::remove_file(file);
            tracing::info!(call_id, "a failed call runs again: its report is forgotten");
            return None;
        }
        Some(on_disk)
    }

    fn call_file(&self, call_id: &str) -> PathBuf {
        let name = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(call_id.as_bytes()));
        self.cfg
            .root
            .join("agent/calls")
            .join(format!("{name}.json"))
    }

    /// Runs `call` once per `call_id`; with `rerun_failed`, a remembered failure is forgotten
    /// first, so it runs again (a success is never run twice).
    pub(crate) async fn run_once(
        &self,
        call_id: &str,
        package_dir: &str,
        capabilities: Option<serde_json::Value>,
        call: HookCall,
        rerun_failed: bool,
    ) -> AgentReply {
        let file = self.call_file(call_id);
        if let Some(done) = self
            .remembered(call_id, &file, rerun_failed)
            .await
            .map(AgentReply::fit_frame)
        {
            tracing::info!(
                call_id,
                "repeated call answered from the first run's report"
            );
            return done;
        }
        let cell = self
            .calls
            .lock()
            .await
            .entry(call_id.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            // Checked before it is remembered, so a repeat gets the same small answer.
            let reply = self.run(package_dir, capabilities, &call).await.fit_frame();
            // Only a finished hook is remembered; a host-side error may be retried.
            if matches!(reply, AgentReply::Hook { .. }) {
                if let Some(parent) = file.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                if let Ok(text) = serde_json::to_string(&reply) {
                    let _ = std::fs::write(&file, text);
                }
            }
            reply
        })
        .await
        .clone()
    }

    async fn plugin(&self, dir: &Path) -> Result<Plugin, String> {
        if let Some(p) = self.plugins.lock().await.get(dir) {
            return Ok(p.clone());
        }
        // Loaded and remembered whole between two installs, never across one.
        let _installed = self.installing.read().await;
        let started = std::time::Instant::now();
        let verified = self.verified.lock().await.get(dir).cloned();
        let plugin = match verified {
            Some((package, sha256)) => self.runtime.load_verified(&package, &sha256).await,
            None => {
                let package = Package::open(dir).map_err(|e| e.to_string())?;
                self.runtime.load(&package).await
            }
        }
        .map_err(|e| e.to_string())?;
        crate::compiled::note_load(&plugin, started.elapsed());
        self.plugins
            .lock()
            .await
            .insert(dir.to_path_buf(), plugin.clone());
        Ok(plugin)
    }

    /// Runs `call` of the package installed at `package_dir`, unremembered.
    pub(crate) async fn run(
        &self,
        package_dir: &str,
        capabilities: Option<serde_json::Value>,
        call: &HookCall,
    ) -> AgentReply {
        // Loaded from the sealed copy, never from the plugin-writable one, so a plugin cannot
        // rewrite its own manifest or component for the next load.
        let dir = self.cfg.root.join(sealed_of(package_dir));
        let plugin = match self.plugin(&dir).await {
            Ok(p) => p,
            Err(message) => {
                return AgentReply::Error {
                    message: format!("loading plugin in {}: {message}", dir.display()),
                };
            }
        };
        let narrowed = match capabilities.filter(|v| !v.is_null()) {
            None => None,
            Some(v) => {
                let over: CapabilityOverride = match serde_json::from_value(v) {
                    Ok(o) => o,
                    Err(e) => {
                        return AgentReply::Error {
                            message: format!("operator capabilities: {e}"),
                        };
                    }
                };
                match plugin.capabilities().narrow(&over) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        return AgentReply::Error {
                            message: e.to_string(),
                        };
                    }
                }
            }
        };
        let env = CallEnv {
            dirs: dirs_of(call),
            server_address: self.cfg.address.clone(),
            supervisor: self.supervisor.clone(),
            capabilities: narrowed,
            secrets: call.secrets(),
            labels: Labels::of(call),
            sealed_package: Some(dir.clone()),
        };
        if let Err(message) = self.create_dirs(&env) {
            return AgentReply::Error { message };
        }
        let mut report = match plugin.call(call, &env).await {
            Ok(outcome) => report_of_outcome(outcome),
            Err(failure) => report_of_failure(failure),
        };
        // Checked after failures too: a plugin must not fill the disk and then fail (or ask to
        // be retried) to escape the check; the limit is the truer reason, and not retryable.
        let caps = env.capabilities.as_ref().unwrap_or(plugin.capabilities());
        match self.disk_check(caps, &env).await {
            Err(message) => {
                report.outcome = HookResult::Failed {
                    kind: "disk-limit".into(),
                    message,
                    retryable: false,
                };
            }
            Ok(rels) if !env.labels.service.is_empty() => {
                let service = &env.labels.service;
                self.disk.within(service);
                self.disk
                    .note(service, env.owner(plugin.name()), rels, caps.disk_mb);
            }
            Ok(_) => {}
        }
        let outcome = outcome_word(&report.outcome);
        tracing::info!(
            hook = call.name(),
            outcome,
            ms = report.duration_ms,
            "hook finished"
        );
        AgentReply::Hook { report }
    }
}

impl Hooks {
    /// The plugin's writable directories together must fit its `disk-mb`. A check after the
    /// hook, not a quota: what was written stays, but the hook (and so the launch) fails.
    /// Returns the directories it counted (relative to the server root), for the disk watch.
    async fn disk_check(&self, caps: &Capabilities, env: &CallEnv) -> Result<Vec<PathBuf>, String> {
        let mut rels = Vec::new();
        for g in caps.dirs.iter().filter(|g| g.access == Access::ReadWrite) {
            if let Some(d) = env.dirs.get(&g.dir) {
                rels.push(
                    d.strip_prefix(&self.cfg.root)
                        .map_err(|e| e.to_string())?
                        .to_owned(),
                );
            }
        }
        let root = self.root()?;
        let counted = rels.clone();
        let used = tokio::task::spawn_blocking(move || crate::disk_watch::usage(&root, &counted))
            .await
            .map_err(|e| e.to_string())??;
        let limit = caps.disk_mb << 20;
        if used > limit {
            return Err(format!(
                "the plugin's writable directories use {} MiB, over its disk-mb limit of {} MiB \
                 (checked after each hook)",
                used.div_ceil(1 << 20),
                caps.disk_mb
            ));
        }
        Ok(rels)
    }

    /// Creates the call's directories beneath the server root without following links.
    fn create_dirs(&self, env: &CallEnv) -> Result<(), String> {
        let root = self.root()?;
        for d in env.dirs.values() {
            let rel = d
                .strip_prefix(&self.cfg.root)
                .map_err(|_| format!("directory {} is outside the server root", d.display()))?;
            root.create_dir_all(rel).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A report's outcome in a word for the agent log: the report itself goes to the control
/// plane, and repeating a CM report's every `produced` path here would only fill the log.
fn outcome_word(r: &HookResult) -> &str {
    match r {
        HookResult::Done => "done",
        HookResult::Health { .. } => "health",
        HookResult::Cm { .. } => "cm-report",
        HookResult::Failed { kind, .. } => kind,
    }
}

fn lines(logs: &[stratus_plugin_runtime::LogRecord]) -> Vec<LogLine> {
    logs.iter()
        .map(|l| LogLine {
            level: format!("{:?}", l.level).to_lowercase(),
            message: l.message.clone(),
        })
        .collect()
}

fn report_of_outcome(o: HookOutcome) -> HookReport {
    HookReport {
        outcome: match o.value {
            HookValue::Unit => HookResult::Done,
            HookValue::Health(report) => HookResult::Health { report },
            HookValue::Cm(report) => HookResult::Cm { report },
        },
        stdout: o.stdout,
        stderr: o.stderr,
        truncated: o.truncated,
        logs: lines(&o.logs),
        denials: o.denials,
        duration_ms: o.duration.as_millis() as u64,
    }
}

/// The failure's kind as a stable word operators and tests can match on.
pub fn failure_kind(f: &HookFailure) -> &'static str {
    match f {
        HookFailure::HookError { .. } => "hook-error",
        HookFailure::Trap { .. } => "trap",
        HookFailure::Timeout { .. } => "timeout",
        HookFailure::OutOfMemory { .. } => "out-of-memory",
        HookFailure::StackOverflow => "stack-overflow",
        HookFailure::CapabilityDenied { .. } => "capability-denied",
        HookFailure::OutputLimit { .. } => "output-limit",
        HookFailure::WrongWorld { .. } => "wrong-world",
        HookFailure::Host { .. } => "host",
    }
}

fn report_of_failure(f: CallFailure) -> HookReport {
    let retryable = matches!(
        f.kind,
        HookFailure::HookError {
            retryable: true,
            ..
        }
    );
    let message = match &f.kind {
        HookFailure::HookError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    HookReport {
        outcome: HookResult::Failed {
            kind: failure_kind(&f.kind).to_string(),
            message,
            retryable,
        },
        stdout: f.stdout,
        stderr: f.stderr,
        truncated: f.truncated,
        logs: lines(&f.logs),
        denials: f.denials,
        duration_ms: f.duration.as_millis() as u64,
    }
}
