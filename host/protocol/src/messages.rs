//! Frames exchanged on a control-plane connection.

use serde::{Deserialize, Serialize};
use stratus_model::context::{CmReport, HealthReport, HookCall};

/// The first frame a peer sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Hello {
    /// An agent on a server, authenticated by the credential issued for that server at launch.
    Agent {
        deployment: String,
        server_id: String,
        credential: String,
        pid: u32,
        /// The server's own address, sent only when its bootstrap named none (a cloud server):
        /// the local address of this connection's socket. The control plane records it only
        /// after checking it (see `stratus_engine::learned_address`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// An operator's CLI, authenticated by the control token in the state directory.
    Operator { token: String },
}

/// The control plane's answer to `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Welcome {
    Welcome {
        /// For an agent: the HTTPS base URL (`https://host:port`) of the control plane's file
        /// endpoint, where it fetches packages and data sources by content address; `None`
        /// for an operator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        files: Option<String>,
    },
    Refused {
        reason: String,
    },
}

/// A package in cloud files, named by content: the agent fetches the manifest at its address
/// from the file endpoint, then every file it lists, each checked against its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSource {
    pub name: String,
    /// SHA-256 over the package's files (paths, modes, contents), checked on arrival.
    pub digest: String,
    /// Number of files, checked on arrival with the digest.
    pub files: usize,
    /// SHA-256 of the package's manifest object: its content address.
    pub manifest: String,
}

/// What the control plane asks an agent to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentRequest {
    /// Download a package (a service into `mnt/services/a<id>`, a CM adapter or its input
    /// files into `var/lib/stratus/cm/<unit>/…`) to `dest`, relative to the server root,
    /// following no link; and into the agent's sealed copy of `dest` (replaced whole), which
    /// is what the agent loads the plugin from.
    InstallPackage {
        dest: String,
        package: PackageSource,
        /// The package is a plugin (a service or a CM adapter, not a CM unit's input files):
        /// its component goes only into the sealed copy. Absent from older control planes,
        /// whose packages are then copied whole.
        #[serde(default)]
        plugin: bool,
    },
    /// Download one object (a data source image) by content address to a path relative to
    /// the server root, streamed to disk and checked against its sha256 and size.
    FetchFile {
        /// What the object is, for messages (e.g. its cloud-files key).
        name: String,
        sha256: String,
        size: u64,
        dest: String,
    },
    /// Write a file (CM credentials) relative to the server root, with a mode, for this server only.
    WriteFile {
        dest: String,
        contents: String,
        mode: u32,
    },
    /// Keep `credential` (in `<root>/agent/credential`, durably) and present it from now on
    /// instead of the launch credential, which the control plane then stops accepting: the
    /// launch credential travelled in the bootstrap (a cloud instance's user-data stays
    /// readable from its metadata service), this one only inside the pinned connection.
    ReplaceCredential {
        credential: String,
    },
    /// Remove files relative to the server root (credentials after a CM run).
    RemoveFiles {
        paths: Vec<String>,
    },
    /// Run one hook of a package already installed (or, for CM adapters, fetched) on the server.
    Hook {
        /// Stable id of this step: a repeated id returns the first run's report.
        call_id: String,
        /// Package directory relative to the server root.
        package_dir: String,
        /// The operator's narrowing of the plugin's capabilities (TOML table as JSON).
        capabilities: Option<serde_json::Value>,
        call: Box<HookCall>,
        /// Run again if the first run's report for this id is a failure (the operator launched
        /// a failed deployment again); a report of success is still returned, never re-run.
        #[serde(default)]
        rerun_failed: bool,
    },
    /// Check a started service's health on a schedule from now on (see [`HealthWatch`]); a
    /// second watch of the same service replaces the first.
    WatchHealth {
        watch: HealthWatch,
    },
    /// Stop checking `service` (it left the deployment); nothing to do if it was not checked.
    UnwatchHealth {
        service: String,
    },
    /// Report this server's CPU and memory every `interval_ms` from now on (the agent holds it
    /// to the model's bounds, `stratus_model::metrics::{MIN,MAX}_INTERVAL_MS`), unsolicited,
    /// as [`AgentReply::Metrics`]; a second watch replaces the first.
    WatchMetrics {
        interval_ms: u64,
    },
    /// Stop every supervised process and exit.
    Shutdown {
        grace_ms: u64,
    },
    Ping,
    /// Send the end of the agent's own log (`<root>/agent/agent.log`, the current file), at
    /// most `max_bytes` (held to [`MAX_AGENT_LOG_BYTES`]) and starting at a line; answered by
    /// [`AgentReply::Log`].
    ReadLog {
        max_bytes: u64,
    },
}

/// Most bytes of its log an agent sends for one [`AgentRequest::ReadLog`]: JSON escaping at
/// most sextuples them (`\u0001`), which keeps the reply far below a frame.
pub const MAX_AGENT_LOG_BYTES: u64 = 1 << 20;

/// A service whose `health-check` hook the agent calls every `interval_ms`, each call given at
/// most `timeout_ms`. Results travel back unsolicited, as [`AgentReply::Health`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthWatch {
    /// The service's name in the deployment file.
    pub service: String,
    /// Package directory relative to the server root.
    pub package_dir: String,
    /// The operator's narrowing of the plugin's capabilities (TOML table as JSON).
    pub capabilities: Option<serde_json::Value>,
    /// The `health-check` call with the service's context.
    pub call: Box<HookCall>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

/// One health check's result, as an agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthResult {
    pub service: String,
    pub status: stratus_model::context::HealthStatus,
    /// The hook's message (redacted by the runtime), or why there is no report.
    pub message: String,
    pub duration_ms: u64,
}

impl HealthResult {
    /// The result with its service name and message within `crate::bounds` (plus room for a
    /// marker, so a message the agent already cut at the bound passes unchanged), whatever
    /// the agent sent.
    pub fn within_bounds(self) -> HealthResult {
        use crate::bounds::{MARKER_BYTES as M, MAX_HEALTH_MESSAGE_BYTES, MAX_PATH_BYTES, cut};
        HealthResult {
            service: cut(self.service, MAX_PATH_BYTES + M),
            message: cut(self.message, MAX_HEALTH_MESSAGE_BYTES + M),
            ..self
        }
    }
}

/// The envelope id of a frame an agent sends on its own (a health result): the control plane
/// numbers its requests from 1, so no reply is ever mistaken for one.
pub const UNSOLICITED_ID: u64 = 0;

/// A hook's result as it travels back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HookReport {
    pub outcome: HookResult,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub logs: Vec<LogLine>,
    pub denials: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum HookResult {
    Done,
    Health {
        report: HealthReport,
    },
    Cm {
        report: CmReport,
    },
    /// `kind` tells apart hook-error, trap, timeout, out-of-memory, capability-denied, …
    Failed {
        kind: String,
        message: String,
        retryable: bool,
    },
}

/// The agent's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AgentReply {
    Done,
    Hook {
        report: HookReport,
    },
    Error {
        message: String,
    },
    /// Sent unsolicited (envelope id [`UNSOLICITED_ID`]): a watched service's health check.
    Health {
        result: HealthResult,
    },
    /// Sent unsolicited, at most once a second: every supervised process that exited without
    /// being asked to, as the agent's supervisor sees them now (a snapshot, not a delta).
    Supervision {
        report: SupervisionReport,
    },
    /// Sent unsolicited, once per metrics interval once asked (`WatchMetrics`): the CPU and
    /// memory of the server's own services.
    Metrics {
        report: MetricsReport,
    },
    /// The end of the agent's log (see [`AgentRequest::ReadLog`]), invalid UTF-8 replaced;
    /// `cut` when the log was longer and only its end is here.
    Log {
        text: String,
        cut: bool,
    },
}

/// The CPU and memory of a server's own services (the processes its agent supervises and
/// their descendants) over the last metrics interval, as an agent reports it. The control
/// plane stamps the time and the server itself.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsReport {
    /// CPU time used over the interval in percent of one CPU (one busy core is 100).
    pub cpu_percent: f64,
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
    /// `memory_bytes` in percent of the server's memory.
    pub memory_percent: f64,
}

impl MetricsReport {
    /// The report with every number finite and within its bounds, whatever the agent sent:
    /// NaN, infinite or negative numbers become 0, and each percentage is capped (see
    /// [`crate::bounds::MAX_CPU_PERCENT`]).
    pub fn within_bounds(self) -> MetricsReport {
        use crate::bounds::{MAX_CPU_PERCENT, MAX_MEMORY_PERCENT};
        let held = |v: f64, max: f64| {
            if v.is_finite() && v > 0.0 {
                v.min(max)
            } else {
                0.0
            }
        };
        MetricsReport {
            cpu_percent: held(self.cpu_percent, MAX_CPU_PERCENT),
            memory_bytes: self.memory_bytes,
            memory_percent: held(self.memory_percent, MAX_MEMORY_PERCENT),
        }
    }
}

/// An agent's supervised processes that crashed (exited without being asked to, with a
/// failure), each with its restarts; the rest run as started and are not named.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SupervisionReport {
    pub processes: Vec<ProcessReport>,
    /// Processes left out past [`crate::bounds::MAX_REPORTED_PROCESSES`].
    #[serde(default)]
    pub omitted: u32,
}

/// One supervised process that crashed at least once since its plugin started it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessReport {
    /// The service (or plugin) that started it, and the name it gave it.
    pub owner: String,
    pub name: String,
    /// Its pid while it runs; `None` while it waits for its next start.
    pub pid: Option<u32>,
    /// Times the supervisor started it again.
    pub restarts: u32,
    /// Exits in a row, each after a run shorter than the supervisor's stable run.
    pub quick_exits_in_a_row: u32,
    /// Whether those quick exits make a crash loop.
    pub crash_loop: bool,
    /// e.g. `exit code 3`, `killed by signal 9 (SIGKILL)`, `could not start: …`.
    pub last_exit: String,
    /// Unix milliseconds of the last exit, and of the next start while it waits for one.
    pub last_exit_at_ms: i64,
    pub next_start_at_ms: Option<i64>,
    /// The end of its output (stdout and stderr) when it last exited, redacted and bounded.
    pub output_tail: String,
}

impl SupervisionReport {
    /// The report within `crate::bounds`, whatever the agent sent.
    pub fn within_bounds(mut self) -> SupervisionReport {
        use crate::bounds::{MARKER_BYTES as M, MAX_OUTPUT_TAIL_BYTES, MAX_REPORTED_PROCESSES};
        let over = self.processes.len().saturating_sub(MAX_REPORTED_PROCESSES);
        self.processes.truncate(MAX_REPORTED_PROCESSES);
        self.omitted = self.omitted.saturating_add(over as u32);
        for p in &mut self.processes {
            p.owner = crate::bounds::cut(std::mem::take(&mut p.owner), 64 + M);
            p.name = crate::bounds::cut(std::mem::take(&mut p.name), 64 + M);
            p.last_exit = crate::bounds::cut(std::mem::take(&mut p.last_exit), 1024 + M);
            p.output_tail = crate::bounds::cut(
                std::mem::take(&mut p.output_tail),
                MAX_OUTPUT_TAIL_BYTES + M,
            );
        }
        self
    }
}

/// What an operator asks the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OperatorRequest {
    /// Launch the deployment file at this absolute path.
    Launch {
        file: String,
    },
    Terminate {
        name: String,
        /// Keep the servers' disks for a post-mortem instead of removing them; older clients
        /// that do not send it get the removal.
        #[serde(default)]
        keep_disks: bool,
    },
    /// Change a tier's target count and/or bounds; the reconciler then works towards them.
    Scale {
        name: String,
        tier: String,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        min: Option<u32>,
        #[serde(default)]
        max: Option<u32>,
    },
    /// Move a running deployment to a new version of its file (an absolute path); with
    /// `dry_run` only say what would change.
    Apply {
        file: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Stop the control plane (deployments keep their state and resume at next start).
    Shutdown,
    Ping,
    /// The end of the agent log of `server`, asked of its connected agent (a server on
    /// another machine keeps its log there); answered by [`OperatorReply::AgentLog`].
    AgentLog {
        deployment: String,
        server: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum OperatorReply {
    Accepted {
        deployment: String,
    },
    /// What an apply changes (one line each, e.g. `~ service app: settings`); empty when the
    /// file changes nothing.
    Applied {
        deployment: String,
        changes: Vec<String>,
    },
    Done,
    Pong {
        pid: u32,
    },
    /// The end of a server's agent log, as its agent sent it (raw text: escape it before
    /// printing it to a terminal); `cut` when only the end of a longer log is here.
    AgentLog {
        text: String,
        cut: bool,
    },
    Error {
        message: String,
        /// What kind of refusal this is; control planes older than the field send none.
        #[serde(default)]
        kind: ErrorKind,
    },
}

/// Why the control plane refused a request, so a client can tell e.g. a missing deployment
/// from bad input (an HTTP layer maps these to status codes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No such deployment (or tier).
    NotFound,
    /// The request or the deployment file is wrong; fix it and ask again.
    Invalid,
    /// The deployment's state does not allow it now.
    Conflict,
    /// The provider has no room for the servers asked for.
    Capacity,
    /// Anything else: the control plane or its journal failed.
    #[default]
    Internal,
}

/// A numbered frame; the answer carries the same id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

/// Room left in a frame for the envelope around a reply.
const ENVELOPE_SLACK: usize = 4096;

impl AgentReply {
    /// The reply itself when it fits in a frame; otherwise a reply that does, so an oversized
    /// report fails its hook (`output-limit`) instead of breaking the connection.
    pub fn fit_frame(self) -> AgentReply {
        let limit = crate::framing::MAX_FRAME - ENVELOPE_SLACK;
        let size = match serde_json::to_string(&self) {
            Ok(line) if line.len() <= limit => return self,
            Ok(line) => line.len(),
            Err(e) => {
                return AgentReply::Error {
                    message: format!("cannot encode the reply: {e}"),
                };
            }
        };
        let reason = format!(
            "the hook's report is {size} bytes, over the {limit}-byte limit of one protocol \
             frame; its output was cut"
        );
        match self {
            AgentReply::Hook { report } => AgentReply::Hook {
                report: report.oversized(reason),
            },
            _ => AgentReply::Error { message: reason },
        }
    }
}

impl HookReport {
    /// The report with every plugin-supplied string within the bounds of `crate::bounds` (plus
    /// room for a marker), whatever the agent sent: what the control plane stores stays small.
    pub fn within_bounds(self) -> HookReport {
        use crate::bounds::{
            MARKER_BYTES as M, MAX_LOG_RECORD_BYTES, MAX_LOG_RECORDS, MAX_MESSAGE_BYTES,
            MAX_PATH_BYTES, MAX_PRODUCED, cut,
        };
        let outcome = match self.outcome {
            HookResult::Done => HookResult::Done,
            HookResult::Health { mut report } => {
                report.message = cut(report.message, MAX_MESSAGE_BYTES + M);
                HookResult::Health { report }
            }
            HookResult::Cm { mut report } => {
                report.summary = cut(report.summary, MAX_MESSAGE_BYTES + M);
                report.produced.truncate(MAX_PRODUCED + 1);
                for p in &mut report.produced {
                    *p = cut(std::mem::take(p), MAX_PATH_BYTES + M);
                }
                HookResult::Cm { report }
            }
            HookResult::Failed {
                kind,
                message,
                retryable,
            } => HookResult::Failed {
                kind: cut(kind, MAX_PATH_BYTES + M),
                message: cut(message, MAX_MESSAGE_BYTES + M),
                retryable,
            },
        };
        HookReport {
            outcome,
            logs: self
                .logs
                .into_iter()
                .take(MAX_LOG_RECORDS + 1)
                .map(|l| LogLine {
                    level: cut(l.level, 16),
                    message: cut(l.message, MAX_LOG_RECORD_BYTES + M),
                })
                .collect(),
            denials: self
                .denials
                .into_iter()
                .take(MAX_LOG_RECORDS)
                .map(|d| cut(d, MAX_PATH_BYTES + M))
                .collect(),
            ..self
        }
    }

    /// This report failed for being too large, keeping only a bounded head of its output.
    fn oversized(self, reason: String) -> HookReport {
        use crate::bounds::{MAX_MESSAGE_BYTES, MAX_PATH_BYTES, cut};
        HookReport {
            outcome: HookResult::Failed {
                kind: "output-limit".into(),
                message: reason,
                retryable: false,
            },
            stdout: cut(self.stdout, MAX_MESSAGE_BYTES),
            stderr: cut(self.stderr, MAX_MESSAGE_BYTES),
            truncated: true,
            logs: Vec::new(),
            denials: self
                .denials
                .into_iter()
                .take(16)
                .map(|d| cut(d, MAX_PATH_BYTES))
                .collect(),
            duration_ms: self.duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{MAX_FRAME, encode};

    fn report(stdout: String) -> AgentReply {
        AgentReply::Hook {
            report: HookReport {
                outcome: HookResult::Done,
                stdout,
                stderr: String::new(),
                truncated: false,
                logs: vec![],
                denials: vec![],
                duration_ms: 5,
            },
        }
    }

    #[test]
    fn a_report_from_a_careless_agent_is_brought_within_bounds() {
        use crate::bounds::{MARKER_BYTES, MAX_MESSAGE_BYTES};
        let AgentReply::Hook { report: empty } = report(String::new()) else {
            unreachable!()
        };
        let big = HookReport {
            outcome: HookResult::Failed {
                kind: "hook-error".into(),
                message: "m".repeat(10 << 20),
                retryable: false,
            },
            logs: vec![
                LogLine {
                    level: "info".into(),
                    message: "l".into(),
                };
                5000
            ],
            ..empty
        };
        let small = big.within_bounds();
        let HookResult::Failed { message, .. } = &small.outcome else {
            panic!()
        };
        assert!(message.len() <= MAX_MESSAGE_BYTES + 2 * MARKER_BYTES);
        assert!(message.ends_with("(cut, 10485760 bytes)"));
        assert_eq!(small.logs.len(), crate::bounds::MAX_LOG_RECORDS + 1);
        // A report the runtime already bounded passes unchanged, marker and all.
        let AgentReply::Hook { report: ok } = report(format!("{}…(cut, 9 bytes)", "o".repeat(8)))
        else {
            unreachable!()
        };
        assert!(ok.clone().within_bounds() == ok);
    }

    #[test]
    fn a_terminate_request_without_keep_disks_removes_them() {
        let old: OperatorRequest =
            serde_json::from_str(r#"{"type":"terminate","name":"web"}"#).unwrap();
        assert!(matches!(
            old,
            OperatorRequest::Terminate {
                keep_disks: false,
                ..
            }
        ));
        let keep: OperatorRequest =
            serde_json::from_str(r#"{"type":"terminate","name":"web","keep_disks":true}"#).unwrap();
        assert!(matches!(
            keep,
            OperatorRequest::Terminate {
                keep_disks: true,
                ..
            }
        ));
    }

    #[test]
    fn an_error_reply_without_a_kind_is_internal() {
        let old: OperatorReply =
            serde_json::from_str(r#"{"type":"error","message":"no"}"#).unwrap();
        assert!(matches!(
            old,
            OperatorReply::Error {
                kind: ErrorKind::Internal,
                ..
            }
        ));
        let line = serde_json::to_string(&OperatorReply::Error {
            message: "x".into(),
            kind: ErrorKind::NotFound,
        })
        .unwrap();
        assert!(line.contains(r#""kind":"not-found""#), "{line}");
    }

    #[test]
    fn a_scale_request_may_name_only_bounds() {
        let req: OperatorRequest =
            serde_json::from_str(r#"{"type":"scale","name":"web","tier":"app","max":6}"#).unwrap();
        assert!(matches!(
            req,
            OperatorRequest::Scale {
                count: None,
                min: None,
                max: Some(6),
                ..
            }
        ));
    }

    #[test]
    fn a_health_result_is_cut_to_its_bound() {
        use crate::bounds::{MARKER_BYTES, MAX_HEALTH_MESSAGE_BYTES};
        let r = HealthResult {
            service: "hello".into(),
            status: stratus_model::context::HealthStatus::Critical,
            message: "x".repeat(1 << 20),
            duration_ms: 1,
        }
        .within_bounds();
        assert!(r.message.len() <= MAX_HEALTH_MESSAGE_BYTES + 2 * MARKER_BYTES);
        assert!(r.message.ends_with("(cut, 1048576 bytes)"), "{}", r.message);
        let r = HealthResult {
            message: crate::bounds::cut("x".repeat(1 << 20), MAX_HEALTH_MESSAGE_BYTES),
            ..r
        };
        assert!(r.message.ends_with("(cut, 1048576 bytes)"), "{}", r.message);
        assert_eq!(r.service, "hello");
        assert_eq!(
            r.clone().within_bounds(),
            r,
            "a second cut keeps the first marker"
        );
    }

    #[test]
    fn a_metrics_report_is_held_to_finite_non_negative_numbers() {
        use crate::bounds::{MAX_CPU_PERCENT, MAX_MEMORY_PERCENT};
        let wild = MetricsReport {
            cpu_percent: f64::NAN,
            memory_bytes: 7,
            memory_percent: f64::INFINITY,
        }
        .within_bounds();
        assert_eq!((wild.cpu_percent, wild.memory_percent), (0.0, 0.0));
        assert_eq!(wild.memory_bytes, 7);
        let negative = MetricsReport {
            cpu_percent: -5.0,
            memory_percent: f64::NEG_INFINITY,
            ..wild
        };
        assert_eq!(negative.within_bounds().cpu_percent, 0.0);
        let huge = MetricsReport {
            cpu_percent: 1e300,
            memory_bytes: u64::MAX,
            memory_percent: 1e9,
        }
        .within_bounds();
        assert_eq!(huge.cpu_percent, MAX_CPU_PERCENT);
        assert_eq!(huge.memory_percent, MAX_MEMORY_PERCENT);
        let fine = MetricsReport {
            cpu_percent: 97.5,
            memory_bytes: 1 << 20,
            memory_percent: 1.5,
        };
        assert_eq!(fine.within_bounds(), fine);
        // An unsolicited metrics frame reads back as sent.
        let line = serde_json::to_string(&AgentReply::Metrics { report: fine }).unwrap();
        assert!(line.contains(r#""type":"metrics""#), "{line}");
    }

    #[test]
    fn a_reply_that_fits_is_unchanged() {
        assert_eq!(
            format!("{:?}", report("hi".into()).fit_frame()),
            format!("{:?}", report("hi".into()))
        );
    }

    #[test]
    fn an_oversized_report_becomes_a_failed_hook_that_fits_a_frame() {
        let fitted = report("x".repeat(MAX_FRAME + 1)).fit_frame();
        let AgentReply::Hook { report } = &fitted else {
            panic!("{fitted:?}")
        };
        let HookResult::Failed { kind, message, .. } = &report.outcome else {
            panic!("{:?}", report.outcome)
        };
        assert_eq!(kind, "output-limit");
        assert!(message.contains("limit of one protocol frame"), "{message}");
        assert!(
            report
                .stdout
                .ends_with(&format!("(cut, {} bytes)", MAX_FRAME + 1))
        );
        let envelope = Envelope {
            id: u64::MAX,
            body: fitted,
        };
        assert!(encode(&envelope).is_ok());
    }

    #[test]
    fn a_supervision_report_is_held_to_its_bounds() {
        use crate::bounds::{MARKER_BYTES, MAX_OUTPUT_TAIL_BYTES, MAX_REPORTED_PROCESSES};
        let p = ProcessReport {
            owner: "o".repeat(10_000),
            name: "n".into(),
            pid: None,
            restarts: 1,
            quick_exits_in_a_row: 1,
            crash_loop: false,
            last_exit: "x".repeat(100_000),
            last_exit_at_ms: 0,
            next_start_at_ms: None,
            output_tail: "t".repeat(1 << 20),
        };
        let r = SupervisionReport {
            processes: vec![p; MAX_REPORTED_PROCESSES + 10],
            omitted: 5,
        }
        .within_bounds();
        assert_eq!(r.processes.len(), MAX_REPORTED_PROCESSES);
        assert_eq!(r.omitted, 15);
        let p = &r.processes[0];
        assert!(p.output_tail.len() <= MAX_OUTPUT_TAIL_BYTES + 2 * MARKER_BYTES);
        assert!(
            p.owner.len() <= 64 + 2 * MARKER_BYTES && p.last_exit.len() <= 1024 + 2 * MARKER_BYTES
        );
        assert!(encode(&r).unwrap().len() < 256 * 1024);
    }
}
