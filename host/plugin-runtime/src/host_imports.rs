//! The `stratus:plugin/host` functions, each checked against the call's capabilities.

use crate::bindings::host::{
    self, Command, CommandFiles, CommandOutput, Level, ProcessSpec as WitSpec,
};
use crate::call::State;
use crate::command;
use crate::network::record;
use crate::output::{LogLevel, LogRecord};
use crate::program_user::{ProgramUser, hand_over};
use crate::supervisor::{ProcessSpec, ProcessState};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stratus_model::plugin::capabilities::{Access, DirKind, RunAs};

use stratus_protocol::bounds::{
    MAX_LOG_BYTES, MAX_LOG_RECORD_BYTES, MAX_LOG_RECORDS, MAX_MESSAGE_BYTES,
};

impl State {
    fn refuse(&mut self, r: command::Refusal) -> String {
        if let Some(d) = r.denial {
            // A refused program or path is the plugin's text: redact it before it is logged.
            record(
                &self.host.denials,
                self.host.redactor.bounded(d, MAX_MESSAGE_BYTES),
            );
        }
        r.message
    }

    fn plugin_timeout(&self) -> Duration {
        Duration::from_millis(self.host.caps.timeout_ms)
    }
}

macro_rules! plugin_event {
    ($lvl:expr, $h:expr, $msg:expr) => {{
        let l = &$h.labels;
        let (plugin, deployment, tier, server, service) =
            (&$h.plugin, &l.deployment, &l.tier, &l.server, &l.service);
        match $lvl {
            LogLevel::Trace => {
                tracing::trace!(plugin, deployment, tier, server, service, "{}", $msg)
            }
            LogLevel::Debug => {
                tracing::debug!(plugin, deployment, tier, server, service, "{}", $msg)
            }
            LogLevel::Info => tracing::info!(plugin, deployment, tier, server, service, "{}", $msg),
            LogLevel::Warn => tracing::warn!(plugin, deployment, tier, server, service, "{}", $msg),
            LogLevel::Error => {
                tracing::error!(plugin, deployment, tier, server, service, "{}", $msg)
            }
        }
    }};
}

impl crate::call::HostCtx {
    /// Who this plugin's programs run as (`None`: the agent's own user), after the plugin's
    /// writable directories were handed to that user so the program can work in them. The
    /// server's `<root>/etc` (`server-config`) is never handed over: only a root CM tool may
    /// change the server's configuration.
    async fn program_user(&self) -> Result<Option<ProgramUser>, String> {
        let user = match self.caps.run_as {
            RunAs::Root => None,
            RunAs::ProgramUser => self.supervisor.program_user(),
        };
        let Some(user) = user else {
            return Ok(None);
        };
        let dirs: Vec<PathBuf> = self
            .caps
            .dirs
            .iter()
            .filter(|g| g.access == Access::ReadWrite)
            .filter(|g| matches!(g.dir, DirKind::Service | DirKind::WorkDir))
            .filter_map(|g| self.dirs.get(&g.dir).cloned())
            .collect();
        tokio::task::spawn_blocking(move || {
            for dir in &dirs {
                hand_over(dir, user).map_err(|e| {
                    format!("cannot hand {} to the program user: {e}", dir.display())
                })?;
            }
            Ok(Some(user))
        })
        .await
        .map_err(|e| format!("handing directories to the program user: {e}"))?
    }

    /// Ends a call's log: one line says how many records the per-call bounds dropped.
    pub(crate) fn finish_logs(&mut self) {
        if self.dropped_logs == 0 {
            return;
        }
        let message = format!(
            "… {} more log records dropped (a call keeps {MAX_LOG_RECORDS} records, \
             {MAX_LOG_BYTES} bytes)",
            self.dropped_logs
        );
        plugin_event!(LogLevel::Warn, self, message);
        self.logs.push(LogRecord {
            level: LogLevel::Warn,
            message,
        });
    }
}

impl State {
    /// `run` (`files` none) and `run-with-files`: the program is checked, the files opened,
    /// then it runs in a leaf of the service's cgroup, as the program user when there is one.
    async fn run_program(
        &mut self,
        cmd: Command,
        files: Option<CommandFiles>,
    ) -> wasmtime::Result<Result<CommandOutput, String>> {
        let h = &self.host;
        let checked = match command::check(
            &h.caps,
            &h.dirs,
            h.sealed_package.as_deref(),
            &cmd.program,
            cmd.working_dir.as_deref(),
            &cmd.env,
        ) {
            Ok(c) => c,
            Err(r) => return Ok(Err(self.refuse(r))),
        };
        let with_files = files.is_some();
        let opened = match files {
            None => crate::command_files::Opened::default(),
            Some(files) => {
                let (caps, dirs) = (h.caps.clone(), h.dirs.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    let (i, o) = (files.stdin_file.as_deref(), files.stdout_file.as_deref());
                    crate::command_files::open(&caps, &dirs, i, o)
                })
                .await?;
                match opened {
                    Ok(o) => o,
                    Err(r) => return Ok(Err(self.refuse(r))),
                }
            }
        };
        let h = &self.host;
        let mut timeout = self.plugin_timeout();
        if cmd.timeout_ms > 0 {
            timeout = timeout.min(Duration::from_millis(cmd.timeout_ms.into()));
        }
        // Arguments may carry credentials, so only the program is logged.
        let program = checked.program.display();
        let suffix = if with_files { " with files" } else { "" };
        plugin_event!(LogLevel::Debug, h, format!("run {program}{suffix}"));
        let user = match h.program_user().await {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        let leaf = match h.supervisor.run_leaf(&h.owner, h.caps.processes, user) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let streams = command::Streams {
            stdin: match (opened.stdin, cmd.stdin) {
                (Some(f), _) => command::Input::File(f),
                (None, Some(b)) => command::Input::Bytes(b),
                (None, None) => command::Input::Null,
            },
            stdout: opened.stdout,
        };
        let cap = h.caps.output_bytes as usize;
        let r = command::run_with(&checked, &cmd.args, &cmd.env, streams, timeout, cap, leaf).await;
        Ok(r.map(|f| CommandOutput {
            exit_code: f.exit_code,
            stdout: f.stdout,
            stderr: f.stderr,
            truncated: f.truncated,
        }))
    }
}

impl host::Host for State {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let h = &mut self.host;
        // Counted before any work, so a flood costs the plugin's time, not the agent log.
        if h.logs.len() >= MAX_LOG_RECORDS {
            h.dropped_logs += 1;
            return Ok(());
        }
        let message = h.redactor.bounded(message, MAX_LOG_RECORD_BYTES);
        if h.log_bytes + message.len() > MAX_LOG_BYTES {
            h.dropped_logs += 1;
            return Ok(());
        }
        plugin_event!(level, h, message);
        h.log_bytes += message.len();
        h.logs.push(LogRecord { level, message });
        Ok(())
    }

    async fn set_status(&mut self, message: String) -> wasmtime::Result<()> {
        let h = &mut self.host;
        let message = h.redactor.bounded(message, MAX_MESSAGE_BYTES);
        h.status_updates += 1;
        // Status lines share the agent-log budget of the call's log records.
        if h.status_updates <= MAX_LOG_RECORDS && h.log_bytes + message.len() <= MAX_LOG_BYTES {
            h.log_bytes += message.len();
            plugin_event!(LogLevel::Debug, h, format!("status: {message}"));
        }
        h.status = Some(message);
        Ok(())
    }

    async fn run(&mut self, cmd: Command) -> wasmtime::Result<Result<CommandOutput, String>> {
        self.run_program(cmd, None).await
    }

    async fn run_with_files(
        &mut self,
        cmd: Command,
        files: CommandFiles,
    ) -> wasmtime::Result<Result<CommandOutput, String>> {
        if cmd.stdin.is_some() && files.stdin_file.is_some() {
            return Ok(Err(
                "run-with-files: `stdin` and `stdin-file` are both set; give one".into(),
            ));
        }
        self.run_program(cmd, Some(files)).await
    }

    async fn render_template(
        &mut self,
        template: String,
        extra: Vec<(String, String)>,
        escaping: host::Escaping,
    ) -> wasmtime::Result<Result<String, String>> {
        let rendered = crate::render::render_template(&self.host, template, extra, escaping);
        Ok(rendered.await)
    }

    async fn enstratus_cfg(&mut self) -> wasmtime::Result<Result<String, String>> {
        Ok(crate::render::enstratus_cfg(&self.host))
    }

    async fn spawn(&mut self, spec: WitSpec) -> wasmtime::Result<Result<u32, String>> {
        let h = &self.host;
        let checked = match command::check(
            &h.caps,
            &h.dirs,
            h.sealed_package.as_deref(),
            &spec.program,
            spec.working_dir.as_deref(),
            &spec.env,
        ) {
            Ok(c) => c,
            Err(r) => return Ok(Err(self.refuse(r))),
        };
        // The name reaches the agent log and a log file name, which redaction does not cover.
        if h.redactor.redact(&spec.name) != spec.name {
            return Ok(Err("a process name must not contain a secret".into()));
        }
        let spec = ProcessSpec {
            name: spec.name,
            program: checked.program,
            args: spec.args,
            env: spec.env,
            working_dir: checked.working_dir,
            processes: h.caps.processes,
            redactor: h.redactor.clone(),
        };
        let user = match h.program_user().await {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        Ok(h.supervisor.spawn_as(&h.owner, spec, user))
    }

    async fn stop_process(
        &mut self,
        name: String,
        grace_ms: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        let grace = Duration::from_millis(grace_ms.into()).min(self.plugin_timeout());
        Ok(self
            .host
            .supervisor
            .stop(&self.host.owner, &name, grace)
            .await)
    }

    async fn query_process(&mut self, name: String) -> wasmtime::Result<host::ProcessState> {
        Ok(match self.host.supervisor.state(&self.host.owner, &name) {
            ProcessState::Running(pid) => host::ProcessState::Running(pid),
            ProcessState::Exited(code) => host::ProcessState::Exited(code),
            ProcessState::Unknown => host::ProcessState::Unknown,
        })
    }

    async fn wait_for_port(
        &mut self,
        address: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<bool, String>> {
        let net = self.host.net.clone();
        let Some(ip) = net.resolve(&address) else {
            return Ok(Err(format!(
                "`{address}` is not an IP address, `localhost` or `self`"
            )));
        };
        let target = std::net::SocketAddr::new(ip, port);
        if !net.allows(target) {
            let what = format!("network connect to {target} is not granted");
            record(&self.host.denials, what.clone());
            return Ok(Err(format!("capability denied: {what}")));
        }
        let limit = Duration::from_millis(timeout_ms.into()).min(self.plugin_timeout());
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, tokio::net::TcpStream::connect(target)).await;
            if let Ok(Ok(_)) = attempt {
                return Ok(Ok(true));
            }
            if Instant::now() + Duration::from_millis(50) >= deadline {
                return Ok(Ok(false));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl crate::bindings::types::Host for State {}

#[cfg(test)]
#[path = "host_imports_tests.rs"]
mod tests;
