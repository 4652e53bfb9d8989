//! Custom scaling rules: `scaler` components (`wit/scaler.wit`), enStratus's `scaleCheck`.
//!
//! A scaler gets a tier's metric windows and returns one vote per server. It is third-party
//! code with no capabilities at all: its store links only WASI (Rust's standard library
//! imports it) over an empty context (no directories, environment, arguments, network or
//! stdin; stdout discarded; stderr kept only for a panic message; both clocks frozen at the
//! window's `now-ms`, so a rule judges by the window and cannot time anything). Memory and
//! time are capped, and what it returns is checked before anyone sees it.

use crate::bindings::scaler::ScalerPre;
use crate::bindings::scaler::exports::stratus::plugin::scale_rule as wit;
use crate::cache::sha256_hex;
use crate::capabilities::Capabilities;
use crate::limits::Limiter;
use crate::manifest::Manifest;
use crate::output::Redactor;
use crate::runtime::Runtime;
use rustix::fd::OwnedFd;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use stratus_model::context::World;
use stratus_model::ids::Name;
use stratus_model::metrics::ServerWindow;
use stratus_model::scaling::{ScalingPolicy, Vote};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView};

/// Most memory a scaler may have, whatever its manifest asks: a rule reads at most
/// `MAX_SAMPLES` samples per server and needs far less.
pub const MAX_SCALER_MEMORY_MB: u64 = 256;
/// Most time one `scale-check` may take, whatever its manifest asks: the autoscaler waits
/// for it before deciding, so a slow rule delays the tier's scaling.
pub const MAX_SCALER_TIMEOUT_MS: u64 = 10_000;
/// Longest error message kept from a scaler (after control characters are stripped).
pub const MAX_SCALER_ERROR_BYTES: usize = 1024;
/// Largest `plugin.toml` read from a scaler package; real manifests are a few hundred bytes.
const MAX_SCALER_MANIFEST_BYTES: u64 = 64 * 1024;
/// Bytes of a scaler's stderr kept, to name a panic.
const STDERR_BYTES: usize = 4096;
/// Slack for the tokio backstop beyond the epoch deadline, which normally fires first; it
/// ends a scaler waiting in a host call (a WASI sleep), where epochs are not checked.
const BACKSTOP_SLACK: Duration = Duration::from_millis(250);

/// Why a scaler gave no votes. Every message names the package (its path when it could not
/// be loaded, its manifest name after).
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    #[error("scaler package {package}: {reason}")]
    Package { package: PathBuf, reason: String },
    #[error("scaler `{name}` ran past its time limit of {limit_ms} ms")]
    Timeout { name: String, limit_ms: u64 },
    #[error("scaler `{name}` ran out of memory (limit {limit_mb} MiB)")]
    OutOfMemory { name: String, limit_mb: u64 },
    #[error("scaler `{name}` trapped: {reason}")]
    Trap { name: String, reason: String },
    #[error("scaler `{name}` returned an error: {message}")]
    Rule { name: String, message: String },
    #[error("scaler `{name}` returned {votes} votes for {servers} servers")]
    VoteCount {
        name: String,
        votes: usize,
        servers: usize,
    },
    #[error("scaler `{name}` voted {value} for server `{server}` (expected 1, 0 or -1)")]
    VoteRange {
        name: String,
        server: String,
        value: i8,
    },
    #[error("cannot run scaler `{name}`: {reason}")]
    Host { name: String, reason: String },
}

/// The store of one `scale-check`.
struct ScalerState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl wasmtime_wasi::WasiView for ScalerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A compiled scaler, ready to instantiate per call.
struct Loaded {
    sha256: String,
    name: String,
    capabilities: Capabilities,
    pre: ScalerPre<ScalerState>,
}

/// The scaler linker (made on first use: agents never run a scaler) and the compiled
/// scalers, one per package directory (replaced when its component changes).
#[derive(Default)]
pub(crate) struct Scalers {
    linker: OnceLock<Linker<ScalerState>>,
    loaded: Mutex<HashMap<PathBuf, Arc<Loaded>>>,
}

impl Scalers {
    fn linker(&self, engine: &Engine) -> wasmtime::Result<&Linker<ScalerState>> {
        if let Some(l) = self.linker.get() {
            return Ok(l);
        }
        let mut made = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut made)?;
        Ok(self.linker.get_or_init(|| made))
    }
}

/// A clock stopped at the window's `now-ms`.
struct Frozen(Duration);

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl Runtime {
    /// Runs the scaler package at `package` on `windows` (one per server of `tier`) and returns
    /// one vote per window, in order. Compiled once per component (and through the code
    /// cache); each call runs in a fresh store.
    pub async fn scale_check(
        &self,
        package: &Path,
        tier: &Name,
        policy: &ScalingPolicy,
        now_ms: u64,
        windows: &[ServerWindow],
    ) -> Result<Vec<Vote>, ScalerError> {
        let loaded = self.scaler(package).await?;
        let window = tier_window(tier, policy, now_ms, windows);
        let numbers = self.run_scaler(&loaded, &window, now_ms).await?;
        votes(&loaded.name, windows, &numbers)
    }

    /// Compiles a single-world plugin's component (through the code cache) and checks the WIT
    /// version it was built against: shared by the scalers and the cloud drivers. Answers the
    /// component and the sha256 of its code.
    pub(crate) async fn compile_checked(
        &self,
        bytes: Vec<u8>,
        path: PathBuf,
    ) -> Result<(wasmtime::component::Component, String), String> {
        let rt = self.clone();
        let (component, _, sha256) = tokio::task::spawn_blocking(move || rt.compile(&bytes, &path))
            .await
            .map_err(|e| format!("compile task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let info = crate::inspect::describe(&self.inner.engine, &component);
        let names = info
            .imports
            .iter()
            .chain(info.exports.iter().map(|e| &e.name));
        crate::wit_version::check(
            names.map(String::as_str),
            crate::wit_version::HOST_WIT_VERSION,
        )
        .map_err(|e| format!("cannot run this plugin: {e}"))?;
        Ok((component, sha256))
    }

    /// The compiled scaler of `package`, compiling it when new or changed.
    async fn scaler(&self, package: &Path) -> Result<Arc<Loaded>, ScalerError> {
        let bad = |reason: String| ScalerError::Package {
            package: package.to_owned(),
            reason,
        };
        let dir = package.to_owned();
        let limit = self.inner.max_component_bytes;
        let (manifest, bytes) = tokio::task::spawn_blocking(move || read_package(&dir, limit))
            .await
            .map_err(|e| bad(format!("read task failed: {e}")))?
            .map_err(bad)?;
        if manifest.plugin.world != World::Scaler {
            return Err(bad(format!(
                "declares world `{}`, but a scaling rule needs a `scaler` plugin",
                manifest.plugin.world
            )));
        }
        let sha = sha256_hex(&bytes);
        let cached = self
            .inner
            .scalers
            .loaded
            .lock()
            .unwrap()
            .get(package)
            .cloned();
        if let Some(l) = cached.filter(|l| l.sha256 == sha) {
            return Ok(l);
        }
        let path = package.join(&manifest.plugin.component);
        let (component, sha256) = self.compile_checked(bytes, path).await.map_err(bad)?;
        let pre = self
            .inner
            .scalers
            .linker(&self.inner.engine)
            .and_then(|l| l.instantiate_pre(&component))
            .and_then(ScalerPre::new)
            .map_err(|e| bad(format!("not a scaler component: {e:#}")))?;
        let loaded = Arc::new(Loaded {
            sha256,
            name: manifest.plugin.name,
            capabilities: manifest.capabilities,
            pre,
        });
        let mut all = self.inner.scalers.loaded.lock().unwrap();
        all.insert(package.to_owned(), loaded.clone());
        Ok(loaded)
    }

    /// One `scale-check` in a fresh store, within the scaler's memory and time.
    async fn run_scaler(
        &self,
        loaded: &Loaded,
        window: &wit::TierWindow,
        now_ms: u64,
    ) -> Result<Vec<i8>, ScalerError> {
        let name = loaded.name.clone();
        let host = |reason: String| ScalerError::Host {
            name: name.clone(),
            reason,
        };
        let _permit = self
            .inner
            .calls
            .acquire()
            .await
            .map_err(|_| host("the runtime is shutting down".into()))?;
        let memory_mb = loaded.capabilities.memory_mb.min(MAX_SCALER_MEMORY_MB);
        let timeout_ms = loaded.capabilities.timeout_ms.min(MAX_SCALER_TIMEOUT_MS);
        let stderr = MemoryOutputPipe::new(STDERR_BYTES);
        let state = ScalerState {
            wasi: empty_wasi(now_ms, &stderr),
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_mb),
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let _ticking = crate::epoch::arm(&mut store, deadline);
        let call = async {
            let instance = loaded.pre.instantiate_async(&mut store).await?;
            let rule = instance.stratus_plugin_scale_rule();
            rule.call_scale_check(&mut store, window).await
        };
        let limit = Duration::from_millis(timeout_ms) + BACKSTOP_SLACK;
        let timeout = || ScalerError::Timeout {
            name: name.clone(),
            limit_ms: timeout_ms,
        };
        let result = tokio::time::timeout(limit, call)
            .await
            .map_err(|_| timeout())?;
        match result {
            Ok(Ok(numbers)) => Ok(numbers),
            Ok(Err(message)) => Err(ScalerError::Rule {
                name: name.clone(),
                message: clean(message),
            }),
            Err(e) if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) => {
                Err(timeout())
            }
            Err(_) if store.data().limiter.refused_growth.is_some() => {
                Err(ScalerError::OutOfMemory {
                    name: name.clone(),
                    limit_mb: memory_mb,
                })
            }
            Err(e) => Err(ScalerError::Trap {
                name: name.clone(),
                reason: trap_reason(&e, &stderr),
            }),
        }
    }
}

/// A scaler package's manifest and component, each a regular file directly in `dir`, opened
/// without following a link and without blocking on a FIFO, and read within bounds: the
/// control plane runs as a user that can read what the package's author cannot.
pub(crate) fn read_package(dir: &Path, limit: u64) -> Result<(Manifest, Vec<u8>), String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())
        .map_err(|e| format!("is not a package directory (plugin.toml and plugin.wasm): {e}"))?;
    let toml = read_file(&fd, dir, "plugin.toml", MAX_SCALER_MANIFEST_BYTES)?;
    let text = String::from_utf8(toml).map_err(|_| "plugin.toml is not UTF-8".to_string())?;
    let manifest = Manifest::parse(&text, &dir.join("plugin.toml")).map_err(|e| e.to_string())?;
    let wasm = read_file(&fd, dir, &manifest.plugin.component, limit)?;
    Ok((manifest, wasm))
}

/// The file `name` directly beneath `dir`, at most `limit` bytes.
fn read_file(dir: &OwnedFd, shown: &Path, name: &str, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::LOOP => format!("{name} is a symbolic link, which a scaler package may not hold"),
        e => format!("cannot open {}: {e}", shown.join(name).display()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| format!("cannot stat {name}: {e}"))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(format!("{name} is not a regular file"));
    }
    let too_large = |size: u64| format!("{name} is {size} bytes, over the limit of {limit}");
    if stat.st_size as u64 > limit {
        return Err(too_large(stat.st_size as u64));
    }
    let mut bytes = Vec::with_capacity(stat.st_size as usize);
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The WASI context of a scaler: nothing granted, clocks frozen at `now_ms`.
fn empty_wasi(now_ms: u64, stderr: &MemoryOutputPipe) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .wall_clock(Frozen(Duration::from_millis(now_ms)))
        .monotonic_clock(Frozen(Duration::ZERO));
    b.build()
}

/// The trap without its wasm backtrace, with the guest's panic message when it printed one.
fn trap_reason(e: &wasmtime::Error, stderr: &MemoryOutputPipe) -> String {
    let mut reason = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    if let Some(panic) = crate::failure::panic_message(&text) {
        reason = format!("{reason}; {panic}");
    }
    clean(reason)
}

/// A guest-supplied message on one line (newlines and tabs become spaces), stripped of
/// control and invisible characters, and cut at
/// [`MAX_SCALER_ERROR_BYTES`] with a marker giving its original size. Only a prefix is
/// cleaned, so that a huge message costs little.
fn clean(text: String) -> String {
    let original = text.len();
    let mut prefix = text;
    let rough = MAX_SCALER_ERROR_BYTES * 4;
    if original > rough {
        let at = (0..=rough)
            .rev()
            .find(|i| prefix.is_char_boundary(*i))
            .unwrap_or(0);
        prefix.truncate(at);
    }
    let cleaned = Redactor::new(std::iter::empty())
        .redact_owned(prefix)
        .replace(['\n', '\t'], " ");
    if original <= rough && cleaned.len() <= MAX_SCALER_ERROR_BYTES {
        return cleaned;
    }
    let mut end = cleaned.len().min(MAX_SCALER_ERROR_BYTES);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(cut, {original} bytes)", &cleaned[..end])
}

/// The WIT window of a tier.
fn tier_window(
    tier: &Name,
    policy: &ScalingPolicy,
    now_ms: u64,
    windows: &[ServerWindow],
) -> wit::TierWindow {
    let t = &policy.thresholds;
    wit::TierWindow {
        tier: tier.to_string(),
        now_ms,
        thresholds: wit::Thresholds {
            cpu_high: t.cpu_high,
            cpu_low: t.cpu_low,
            ram_high: t.ram_high,
            ram_low: t.ram_low,
        },
        breach_ms: policy.breach_ms,
        cooldown_ms: policy.cooldown_ms,
        servers: windows.iter().map(server_window).collect(),
    }
}

fn server_window(w: &ServerWindow) -> wit::ServerWindow {
    wit::ServerWindow {
        server: w.server.to_string(),
        samples: w
            .samples
            .iter()
            .map(|s| wit::Sample {
                at_ms: s.at_ms,
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory_bytes,
                memory_percent: s.memory_percent,
            })
            .collect(),
    }
}

/// The scaler's numbers as votes: exactly one per server, each 1, 0 or -1.
fn votes(name: &str, windows: &[ServerWindow], numbers: &[i8]) -> Result<Vec<Vote>, ScalerError> {
    if numbers.len() != windows.len() {
        return Err(ScalerError::VoteCount {
            name: name.to_owned(),
            votes: numbers.len(),
            servers: windows.len(),
        });
    }
    windows
        .iter()
        .zip(numbers)
        .map(|(w, &n)| {
            Vote::from_i8(n).ok_or_else(|| ScalerError::VoteRange {
                name: name.to_owned(),
                server: w.server.to_string(),
                value: n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_error_is_cut_and_cleaned() {
        let chunk = "\u{1b}[31mred\u{7}\u{0}\r\né";
        let text = chunk.repeat(1 << 20);
        let size = text.len();
        let out = clean(text);
        assert!(out.len() <= MAX_SCALER_ERROR_BYTES + 64, "{}", out.len());
        assert!(out.ends_with(&format!("…(cut, {size} bytes)")), "{out:?}");
        assert_eq!(clean("no\u{1b}[2J votes".into()), "no votes");
        assert!(out.starts_with("red"), "{out:?}");
        assert!(!out.chars().any(char::is_control), "{out:?}");
    }
}
