//! Calling agents from journaled steps: a hook or a plain request, retried across a dropped
//! connection with the same call id (so the agent answers a repeat with its first report); a
//! hook that asks to be retried is called again as a new attempt (see `retry.rs`).

use crate::agents::LinkError;
use crate::engine::{Engine, EngineError};
use crate::facts::Server;
use crate::launch::{caps, service_package_dir};
use crate::logs::{Component, Subject};
use crate::retry::{RetryWait, call_id, now_ms, sleep_until};
use crate::steps::digest;
use std::time::Duration;
use stratus_model::context::HookCall;
use stratus_model::spec::{DeploymentSpec, RetryPolicy, ServiceSpec};
use stratus_model::state::AgentState;
use stratus_model::step_key::StepKey;
use stratus_protocol::bounds::{MARKER_BYTES, MAX_MESSAGE_BYTES, MAX_PATH_BYTES, cut, cut_str};

/// What the engine keeps of an agent's message: the agent's own bound and its cut marker.
pub(crate) const MAX_AGENT_MESSAGE: usize = MAX_MESSAGE_BYTES + MARKER_BYTES;
use stratus_protocol::{AgentReply, AgentRequest, HookReport, HookResult};

/// The failure kind of a hook's own `hook-error`, the only one whose `retryable` is honoured.
const RETRYABLE_KIND: &str = "hook-error";

/// One hook call as every attempt of it makes it.
struct Attempt<'a> {
    dep: &'a str,
    server: &'a Server,
    key: &'a StepKey,
    input: &'a str,
    package_dir: &'a str,
    capabilities: &'a Option<serde_json::Value>,
    call: &'a HookCall,
    /// The step's run (see `StepRun`): a later run with inputs seen before is a new call.
    run: u32,
}

/// A hook may legitimately take long (loading a data source); the runtime enforces each
/// plugin's own timeout, this only guards against a hung agent.
/// The agent call id of a step's run: the first run keeps the id a hook always had.
fn call_base(dep: &str, key: &StepKey, input: &str, run: u32) -> String {
    match run {
        0 | 1 => format!("{dep}/{key}/{}", &input[..16]),
        n => format!("{dep}/{key}/{}/run-{n}", &input[..16]),
    }
}

const CALL_LIMIT: Duration = Duration::from_secs(600);
const RECONNECT_LIMIT: Duration = Duration::from_secs(60);
/// An agent the monitor saw go away gets only a short chance to come back.
const LOST_RECONNECT_LIMIT: Duration = Duration::from_secs(3);
/// Longest hook message kept with each wait to be retried (the final failure keeps it all).
const MAX_WAIT_MESSAGE: usize = 1024;
const ATTEMPTS: usize = 3;

impl Engine {
    /// Runs `call` on `server` as the journaled step `key`, retrying a retryable hook error
    /// with the default policy; see [`Engine::hook_retrying`].
    pub(crate) async fn hook(
        &self,
        dep: &str,
        server: &Server,
        key: &StepKey,
        package_dir: &str,
        capabilities: Option<serde_json::Value>,
        call: HookCall,
    ) -> Result<HookReport, EngineError> {
        let policy = RetryPolicy::default();
        self.hook_retrying(
            dep,
            server,
            key,
            package_dir,
            capabilities,
            call,
            &policy,
            None,
        )
        .await
    }

    /// Runs a hook of service `svc` on `server` as the journaled step `key`, with the
    /// service's capabilities and retry policy. A load balancer's hooks are journaled without
    /// the servers it balances, which reach it through `start-proxy` and `remove-nodes`.
    pub(crate) async fn service_hook(
        &self,
        spec: &DeploymentSpec,
        svc: &ServiceSpec,
        server: &Server,
        key: &StepKey,
        call: HookCall,
    ) -> Result<HookReport, EngineError> {
        let balanced = spec
            .tier(svc.tier.as_str())
            .and_then(|t| t.balances.as_ref())
            .map(|b| b.service.as_str());
        let dir = service_package_dir(svc);
        let (dep, policy) = (spec.name.as_str(), &svc.retry);
        self.hook_retrying(dep, server, key, &dir, caps(svc), call, policy, balanced)
            .await
    }

    /// Runs `call` on `server` as the journaled step `key`. A `hook-error` the hook marks
    /// retryable is retried after `policy`'s backoff, up to its attempts; any other failure, or
    /// the last attempt's, is an error naming the step, server, hook and the failure.
    #[allow(clippy::too_many_arguments)] // the hook's where, what and how often, all needed
    pub(crate) async fn hook_retrying(
        &self,
        dep: &str,
        server: &Server,
        key: &StepKey,
        package_dir: &str,
        capabilities: Option<serde_json::Value>,
        call: HookCall,
        policy: &RetryPolicy,
        balanced: Option<&str>,
    ) -> Result<HookReport, EngineError> {
        let input = digest(&(call.journal_view(balanced), &capabilities, package_dir));
        let input: &str = &input;
        let (capabilities, call) = (&capabilities, &call);
        // Afresh (a first run, or the operator launched a failed deployment again), a failure
        // the agent remembers for this call runs again; resumed, its first report stands.
        self.step_with(dep, key, input, |step| async move {
            let attempt = Attempt {
                dep,
                server,
                key,
                input,
                package_dir,
                capabilities,
                call,
                run: step.run,
            };
            let mut n = match self.last_wait(dep, key, input)? {
                Some(wait) => {
                    sleep_until(wait.next_at_ms).await;
                    wait.attempt + 1
                }
                None => 1,
            };
            loop {
                match self.hook_attempt(&attempt, n, policy, !step.resumed).await {
                    Ok(Some(report)) => return Ok(report),
                    Ok(None) => n += 1,
                    Err(e) => {
                        self.forget_waits(dep, key, n)?;
                        return Err(e);
                    }
                }
            }
        })
        .await
    }

    /// Attempt `n` of a hook: its report, `None` once a retry was journaled and waited for,
    /// or the failure.
    async fn hook_attempt(
        &self,
        a: &Attempt<'_>,
        n: u32,
        policy: &RetryPolicy,
        rerun_failed: bool,
    ) -> Result<Option<HookReport>, EngineError> {
        let (dep, server, key) = (a.dep, a.server, a.key);
        let hook = a.call.name();
        let sid = server.id.to_string();
        let subject = Subject {
            deployment: Some(dep),
            tier: Some(&server.tier),
            server: Some(&sid),
            service: a.call.service_context().map(|c| c.service_name.as_str()),
        };
        let label = match n {
            1 => key.to_string(),
            n => format!("{key}/attempt-{n}"),
        };
        self.parts.logs.info(
            Component::ConfigurationWorker,
            subject.clone(),
            &format!("calling hook {hook} ({label})"),
        );
        let request = AgentRequest::Hook {
            call_id: call_id(&call_base(dep, key, a.input, a.run), n),
            package_dir: a.package_dir.to_string(),
            capabilities: a.capabilities.clone(),
            call: Box::new(a.call.clone()),
            rerun_failed,
        };
        let started = std::time::Instant::now();
        let reply = self.send(dep, server, key, request).await;
        let outcome = hook_outcome(&reply, n < policy.attempts);
        stratus_telemetry::hook_call(hook, outcome, started.elapsed());
        let report = match reply? {
            AgentReply::Hook { report } => report.within_bounds(),
            AgentReply::Error { message } => {
                return Err(EngineError::Agent {
                    step: key.to_string(),
                    server: server.id.to_string(),
                    message: cut(message, MAX_AGENT_MESSAGE),
                });
            }
            AgentReply::Done
            | AgentReply::Health { .. }
            | AgentReply::Supervision { .. }
            | AgentReply::Metrics { .. }
            | AgentReply::Log { .. } => {
                return Err(EngineError::Agent {
                    step: key.to_string(),
                    server: server.id.to_string(),
                    message: "agent answered a hook call without a report".into(),
                });
            }
        };
        self.keep_hook_output(dep, server, &label, &report);
        let HookResult::Failed {
            kind,
            message,
            retryable,
        } = &report.outcome
        else {
            self.parts.logs.info(
                Component::ConfigurationWorker,
                subject,
                &format!("hook {hook} done in {} ms", report.duration_ms),
            );
            return Ok(Some(report));
        };
        // The agent bounds what it sends; the journal, status and events rely on it.
        let (kind, message) = (
            cut_str(kind, MAX_PATH_BYTES + MARKER_BYTES),
            cut_str(message, MAX_AGENT_MESSAGE),
        );
        // Only the plugin's own "not yet" is retried: a trap, timeout or denial would fail
        // the same way again.
        let asks_retry = *retryable && kind == RETRYABLE_KIND;
        if asks_retry && n < policy.attempts {
            let wait = RetryWait {
                step: key.to_string(),
                server: server.id.to_string(),
                hook: hook.to_string(),
                attempt: n,
                attempts: policy.attempts,
                // One line per wait in the journal and the events: a plugin asking a hundred
                // times with a 64 KiB reason must not fill them.
                message: cut_str(&message, MAX_WAIT_MESSAGE),
                next_at_ms: now_ms()
                    .saturating_add(i64::try_from(policy.wait_after(n).as_millis()).unwrap_or(0)),
            };
            let wait = self.record_wait(dep, key, a.input, wait, subject).await?;
            sleep_until(wait.next_at_ms).await;
            return Ok(None);
        }
        let message = match (asks_retry, n) {
            (true, 1) => format!("{message} (still asking to be retried after 1 attempt)"),
            (true, n) => format!("{message} (still asking to be retried after {n} attempts)"),
            (false, 1) => message,
            (false, n) => format!("{message} (on attempt {n})"),
        };
        self.parts.logs.error(
            Component::ConfigurationWorker,
            subject,
            &format!("hook {hook} failed ({kind}): {message}"),
        );
        Err(EngineError::Hook {
            step: key.to_string(),
            server: server.id.to_string(),
            hook: hook.into(),
            kind,
            message,
        })
    }

    /// Runs a non-hook request as the journaled step `key`.
    pub(crate) async fn agent_request(
        &self,
        dep: &str,
        server: &Server,
        key: &StepKey,
        request: AgentRequest,
    ) -> Result<(), EngineError> {
        let input = digest(&format!("{request:?}"));
        self.step(
            dep,
            key,
            &input,
            self.send_untracked(dep, server, key, request),
        )
        .await
    }

    /// A request outside the journal (it must happen on every attempt of its step).
    pub(crate) async fn send_untracked(
        &self,
        dep: &str,
        server: &Server,
        key: &StepKey,
        request: AgentRequest,
    ) -> Result<(), EngineError> {
        match self.send(dep, server, key, request).await? {
            AgentReply::Error { message } => Err(EngineError::Agent {
                step: key.to_string(),
                server: server.id.to_string(),
                message: cut(message, MAX_AGENT_MESSAGE),
            }),
            _ => Ok(()),
        }
    }

    async fn send(
        &self,
        dep: &str,
        server: &Server,
        key: &StepKey,
        request: AgentRequest,
    ) -> Result<AgentReply, EngineError> {
        let agents = &self.parts.agents;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            if let Err(source) = self.agent_connected(dep, server).await? {
                return Err(EngineError::Link {
                    step: key.to_string(),
                    source,
                });
            }
            match agents
                .call(dep, &server.id.to_string(), request.clone(), CALL_LIMIT)
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(e @ LinkError::Disconnected { .. }) => last = Some(e),
                Err(source) => {
                    return Err(EngineError::Link {
                        step: key.to_string(),
                        source,
                    });
                }
            }
        }
        Err(EngineError::Link {
            step: key.to_string(),
            source: last.unwrap_or(LinkError::Disconnected {
                server: server.id.to_string(),
            }),
        })
    }

    /// Waits for `server`'s agent to be connected. How long is judged only when it is not: a
    /// look at the provider per call was a tenth of the control plane's time in a launch.
    async fn agent_connected(
        &self,
        dep: &str,
        server: &Server,
    ) -> Result<Result<(), LinkError>, EngineError> {
        let agents = &self.parts.agents;
        let id = server.id.to_string();
        if agents
            .wait_connected(dep, &id, Duration::ZERO)
            .await
            .is_ok()
        {
            return Ok(Ok(()));
        }
        // Looked at again after each dropped call: the agent may have died in it.
        let reconnect = self.reconnect_limit(dep, server).await?;
        Ok(agents.wait_connected(dep, &id, reconnect).await)
    }

    /// How long a call waits for `server`'s agent to (re)connect: briefly once the monitor
    /// saw it go, its process is gone (it cannot come back) or it never handshook, else long
    /// enough for a restart.
    async fn reconnect_limit(&self, dep: &str, server: &Server) -> Result<Duration, EngineError> {
        let row = self
            .parts
            .store
            .server::<AgentState>(dep, &server.id.to_string())?;
        let gone = match row {
            Some(row) if row.agent_state == AgentState::Lost => true,
            // Its agent never completed a handshake (a cloud instance that never booted), so no
            // hook ever ran on it: a stop has nothing to wait for.
            Some(row) if row.agent_state == AgentState::Starting => true,
            // Only a server with a handle can be told gone; one without is still launching.
            Some(row) if row.handle.is_some() => self.presence(&row).await.is_gone(),
            _ => false,
        };
        Ok(if gone {
            LOST_RECONNECT_LIMIT
        } else {
            RECONNECT_LIMIT
        })
    }

    /// Hook output is kept per server and per hook under `logs/hooks/`; the runtime has
    /// already replaced secrets with `****`.
    fn keep_hook_output(&self, dep: &str, server: &Server, key: &str, report: &HookReport) {
        let deployment_dir = self.parts.logs.dir().join("hooks").join(dep);
        let dir = deployment_dir.join(server.id.to_string());
        if !dir.is_dir()
            && (stratus_provider::create_spreading_dir(&deployment_dir).is_err()
                || std::fs::create_dir(&dir).is_err())
        {
            return;
        }
        let file = dir.join(format!("{}.log", key.replace('/', "_")));
        let mut text = format!(
            "# {key} on {} ({} ms)\n# outcome: {:?}\n",
            server.id, report.duration_ms, report.outcome
        );
        // Plugin text never starts a line here: a record's further lines are indented and
        // output lines quoted, so nothing a plugin prints can forge a `#` or `[level]` line.
        for l in &report.logs {
            let message = l.message.replace('\n', "\n    ");
            text.push_str(&format!("[{}] {message}\n", l.level));
        }
        if !report.denials.is_empty() {
            let denials = report.denials.join("; ").replace('\n', " ");
            text.push_str(&format!("# denied: {denials}\n"));
        }
        text.push_str("# stdout\n");
        text.push_str(&quoted(&report.stdout));
        text.push_str("# stderr\n");
        text.push_str(&quoted(&report.stderr));
        if report.truncated {
            text.push_str("\n# (output truncated)\n");
        }
        let _ = std::fs::write(file, text);
    }
}

/// How a hook call ended, for the metrics: `retryable` only when it will be called again.
fn hook_outcome(
    reply: &Result<AgentReply, EngineError>,
    attempts_left: bool,
) -> stratus_telemetry::HookOutcome {
    use stratus_telemetry::HookOutcome as O;
    match reply {
        Ok(AgentReply::Hook { report }) => match &report.outcome {
            HookResult::Failed {
                kind, retryable, ..
            } if *retryable && kind == RETRYABLE_KIND && attempts_left => O::retryable,
            HookResult::Failed { .. } => O::failed,
            _ => O::ok,
        },
        _ => O::error,
    }
}

/// Every line of `output` behind `| `, so it reads as output and never as a header.
fn quoted(output: &str) -> String {
    output.lines().map(|l| format!("| {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_telemetry::HookOutcome as O;

    fn reply(outcome: HookResult) -> Result<AgentReply, EngineError> {
        let report = HookReport {
            outcome,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            logs: Vec::new(),
            denials: Vec::new(),
            duration_ms: 1,
        };
        Ok(AgentReply::Hook { report })
    }

    fn failed(kind: &str, retryable: bool) -> Result<AgentReply, EngineError> {
        let (kind, message) = (kind.to_string(), "no".to_string());
        reply(HookResult::Failed {
            kind,
            message,
            retryable,
        })
    }

    #[test]
    fn hook_outcomes_for_the_metrics() {
        assert_eq!(hook_outcome(&reply(HookResult::Done), true), O::ok);
        assert_eq!(
            hook_outcome(&failed(RETRYABLE_KIND, true), true),
            O::retryable
        );
        // The last attempt, or a trap claiming to be retryable, is not called again.
        assert_eq!(
            hook_outcome(&failed(RETRYABLE_KIND, true), false),
            O::failed
        );
        assert_eq!(hook_outcome(&failed("trap", true), true), O::failed);
        assert_eq!(
            hook_outcome(&failed(RETRYABLE_KIND, false), true),
            O::failed
        );
        let refused = Ok(AgentReply::Error {
            message: "x".into(),
        });
        assert_eq!(hook_outcome(&refused, true), O::error);
        let unreachable = Err(EngineError::Other("gone".into()));
        assert_eq!(hook_outcome(&unreachable, true), O::error);
    }
}
