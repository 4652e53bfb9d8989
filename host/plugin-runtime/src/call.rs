//! One hook call: a fresh store with exactly the granted capabilities, instantiate, call,
//! collect output and map failures. A store is never reused, not even after success.

use crate::capabilities::{Access, Capabilities, RunAs};
use crate::dispatch::{Instantiation, invoke};
use crate::env::{CallEnv, DirMap, Labels};
use crate::failure::{CallFailure, HookFailure, TrapEvidence, classify_trap};
use crate::limits::Limiter;
use crate::network::{Denials, NetPolicy, socket_check};
use crate::output::{HookOutcome, LogRecord, Redactor};
use crate::program_user::PROGRAM_USER_ENV;
use crate::runtime::Plugin;
use crate::supervisor::Supervisor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_model::context::{HookCall, ServiceContext, World};
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Everything the guest's store holds.
pub(crate) struct State {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub limiter: Limiter,
    pub host: HostCtx,
}

/// The host side of one call: what the host functions check against and what they record.
pub(crate) struct HostCtx {
    pub plugin: String,
    pub owner: String,
    pub caps: Capabilities,
    pub dirs: DirMap,
    pub sealed_package: Option<std::path::PathBuf>,
    pub net: Arc<NetPolicy>,
    pub supervisor: Supervisor,
    pub labels: Labels,
    pub redactor: Redactor,
    pub denials: Denials,
    pub logs: Vec<LogRecord>,
    /// Bytes of `logs` and of status lines written to the agent log, and records refused
    /// past the per-call bounds.
    pub log_bytes: usize,
    pub dropped_logs: usize,
    /// `set-status` calls so far (only the first ones reach the agent log).
    pub status_updates: usize,
    pub status: Option<String>,
    /// The running hook's service context, for `render-template` and `enstratus-cfg`; none
    /// for configuration-management hooks. Read-only, so calls with an equal context share it.
    pub context: Option<Arc<ServiceContext>>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Slack for the tokio backstop beyond the epoch deadline, which normally fires first.
const BACKSTOP_SLACK: Duration = Duration::from_millis(250);

fn exports(world: World, call: &HookCall) -> bool {
    match call.world() {
        World::Service => matches!(world, World::Service | World::Proxy),
        w => w == world,
    }
}

impl Plugin {
    /// The redactor for `secrets`: the last call's when they are the same, else a new one.
    fn redactor_for(&self, secrets: impl Iterator<Item = String>) -> Redactor {
        let secrets: Vec<String> = secrets.collect();
        let mut last = self.inner.last_redactor.lock().unwrap();
        if let Some((known, r)) = last.as_ref()
            && *known == secrets
        {
            return r.clone();
        }
        let r = Redactor::new(secrets.iter().cloned());
        *last = Some((secrets, r.clone()));
        r
    }

    /// `ctx` shared: the last call's copy when it is equal (consecutive calls of a service
    /// carry the same context), else a new one. Comparing costs far less than cloning.
    fn context_for(&self, ctx: &ServiceContext) -> Arc<ServiceContext> {
        let mut last = self.inner.last_context.lock().unwrap();
        match last.as_ref() {
            Some(known) if **known == *ctx => known.clone(),
            _ => last.insert(Arc::new(ctx.clone())).clone(),
        }
    }

    /// Runs one hook in a fresh sandbox. On failure the returned `CallFailure` still carries
    /// the captured output and logs. Either way every string the plugin supplied has passed
    /// the call's one redactor and the size bounds (`Redactor::seal`).
    pub async fn call(&self, call: &HookCall, env: &CallEnv) -> Result<HookOutcome, CallFailure> {
        let redactor = self.redactor_for(env.secrets.iter().cloned().chain(call.secrets()));
        let result = self.call_unsealed(call, env, &redactor).await;
        redactor.seal(result)
    }

    async fn call_unsealed(
        &self,
        call: &HookCall,
        env: &CallEnv,
        redactor: &Redactor,
    ) -> Result<HookOutcome, CallFailure> {
        let p = &self.inner;
        if !exports(p.world, call) {
            return Err(CallFailure::bare(HookFailure::WrongWorld {
                hook: call.name().into(),
                world: p.world.to_string(),
            }));
        }
        let _permit = p.runtime.inner.calls.acquire().await.map_err(|_| {
            CallFailure::bare(HookFailure::Host {
                message: "runtime is shutting down".into(),
            })
        })?;
        let caps = env.capabilities.as_ref().unwrap_or(&p.capabilities);
        let started = Instant::now();
        let context = call.service_context().map(|ctx| self.context_for(ctx));
        let (state, captured) = State::new(&p.name, caps, env, redactor.clone(), context)
            .map_err(|message| CallFailure::bare(HookFailure::Host { message }))?;
        let Captured { out, err, denials } = captured;
        let mut store = Store::new(&p.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = started + Duration::from_millis(caps.timeout_ms);
        let _ticking = crate::epoch::arm(&mut store, deadline);
        let limit = Duration::from_millis(caps.timeout_ms) + BACKSTOP_SLACK;
        let result = tokio::time::timeout(limit, invoke(&p.pre, &mut store, call)).await;
        let mut state = store.into_data();
        state.host.finish_logs();

        let stdout_raw = out.contents();
        let stderr_raw = err.contents();
        let cap = caps.output_bytes as usize;
        let output_full = stdout_raw.len() >= cap || stderr_raw.len() >= cap;
        let stdout = String::from_utf8_lossy(&stdout_raw).into_owned();
        let stderr = String::from_utf8_lossy(&stderr_raw).into_owned();
        let denied: Vec<String> = denials.lock().unwrap().clone();
        let fail = |kind: HookFailure| CallFailure {
            kind,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            truncated: output_full,
            logs: state.host.logs.clone(),
            denials: denied.clone(),
            status: state.host.status.clone(),
            duration: started.elapsed(),
        };
        let value = match result {
            Err(_elapsed) => {
                return Err(fail(HookFailure::Timeout {
                    limit_ms: caps.timeout_ms,
                }));
            }
            Ok(Ok(Ok(value))) => value,
            Ok(Ok(Err(hook_err))) => {
                let kind = match denied.first() {
                    Some(d) => HookFailure::CapabilityDenied {
                        capability: d.clone(),
                    },
                    None => HookFailure::HookError {
                        message: hook_err.message,
                        retryable: hook_err.retryable,
                    },
                };
                return Err(fail(kind));
            }
            Ok(Err(e)) if e.is::<Instantiation>() => {
                return Err(fail(HookFailure::Host {
                    message: e.to_string(),
                }));
            }
            Ok(Err(trap)) => {
                let kind = classify_trap(&TrapEvidence {
                    error: &trap,
                    refused_memory: state.limiter.refused_growth.is_some(),
                    output_full,
                    first_denial: denied.first().map(|s| s.as_str()),
                    stderr: &stderr,
                    memory_mb: caps.memory_mb,
                    timeout_ms: caps.timeout_ms,
                    output_bytes: caps.output_bytes,
                });
                return Err(fail(kind));
            }
        };
        Ok(HookOutcome {
            value,
            stdout,
            stderr,
            truncated: output_full,
            logs: state.host.logs,
            denials: denied,
            status: state.host.status,
            duration: started.elapsed(),
        })
    }
}

/// Handles to what a call captures, read after the store is gone.
pub(crate) struct Captured {
    pub out: MemoryOutputPipe,
    pub err: MemoryOutputPipe,
    pub denials: Denials,
}

impl State {
    /// The store data for one call of `plugin` with `caps`.
    pub(crate) fn new(
        plugin: &str,
        caps: &Capabilities,
        env: &CallEnv,
        redactor: Redactor,
        context: Option<Arc<ServiceContext>>,
    ) -> Result<(State, Captured), String> {
        let cap = caps.output_bytes as usize;
        let (out, err) = (MemoryOutputPipe::new(cap), MemoryOutputPipe::new(cap));
        let denials = Denials::default();
        // One policy for the socket check and the host functions.
        let net = Arc::new(net_policy(caps, env));
        let wasi = wasi_ctx(caps, env, &out, &err, (net.clone(), &denials))?;
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(caps.memory_mb),
            host: HostCtx {
                plugin: plugin.to_owned(),
                owner: env.owner(plugin),
                net,
                caps: caps.clone(),
                dirs: env.dirs.clone(),
                sealed_package: env.sealed_package.clone(),
                supervisor: env.supervisor.clone(),
                labels: env.labels.clone(),
                redactor,
                denials: denials.clone(),
                logs: Vec::new(),
                log_bytes: 0,
                dropped_logs: 0,
                status_updates: 0,
                status: None,
                context,
            },
        };
        Ok((state, Captured { out, err, denials }))
    }
}

fn net_policy(caps: &Capabilities, env: &CallEnv) -> NetPolicy {
    NetPolicy {
        grants: caps.network.clone(),
        server: env.server_address.parse().ok(),
    }
}

/// The guest's WASI view: granted dirs at their own absolute paths, manifest env only,
/// captured stdio, sockets through the recording check.
fn wasi_ctx(
    caps: &Capabilities,
    env: &CallEnv,
    out: &MemoryOutputPipe,
    err: &MemoryOutputPipe,
    (net, denials): (Arc<NetPolicy>, &Denials),
) -> Result<WasiCtx, String> {
    let mut b = WasiCtxBuilder::new();
    for grant in &caps.dirs {
        let Some(host) = env.dirs.get(&grant.dir) else {
            continue;
        };
        let guest = host
            .to_str()
            .ok_or_else(|| format!("directory {} is not UTF-8", host.display()))?;
        let perms = match grant.access {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        b.preopened_dir(host, guest, perms).map_err(|e| {
            format!(
                "cannot open granted {} directory {}: {e:#}",
                grant.dir,
                host.display()
            )
        })?;
    }
    for (k, v) in &caps.env {
        b.env(k, v);
    }
    // A plugin setting up a server may need the name its programs run as (MariaDB's
    // unix_socket account, a file owner in a config).
    if caps.run_as == RunAs::ProgramUser
        && let Some(name) = env.supervisor.program_user_name()
    {
        b.env(PROGRAM_USER_ENV, name);
    }
    b.stdout(out.clone()).stderr(err.clone());
    b.allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b.socket_addr_check(socket_check(net, denials.clone()));
    Ok(b.build())
}
