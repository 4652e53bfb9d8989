//! `stratus plugin new|build|inspect|call`: the plugin author's inner loop. `new` writes a
//! skeleton, `build` makes its component, `call` runs one hook with the same runtime, limits
//! and supervisor an agent uses.

use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use stratus_plugin_runtime::{
    CallEnv, Labels, Package, Runtime, RuntimeConfig, Supervisor, dirs_of, inspect,
};

mod build;
mod build_rust;
mod componentize;
mod inputs;
mod new;
mod report;
mod scaffold;
mod sdk_files;
mod snapshot;
mod tools;

const NEW_HELP: &str = "\
Writes plugin.toml (with [build]), the source implementing every hook of the world, a cfg/
template that configure renders (service and proxy), a README and a .gitignore into DIR
(default: NAME), which must not exist or be empty. Rust skeletons depend on the SDK of the
repository this stratus was built from.

Examples:
  stratus plugin new shop-web --lang python --world service
  stratus plugin new lb --lang rust --world proxy --dir plugins/lb
  stratus plugin new site-cm --lang js --world cm";

const BUILD_HELP: &str = "\
Builds DIR/plugin.wasm (plugin.component) with the tool of plugin.toml's [build] language:
  rust        cargo build --release --target wasm32-wasip2 (standalone or workspace member)
  python      componentize-py 0.25.1 over [build] entry (default app.py)
  javascript  componentize-js 0.23.0 over [build] entry (default plugin.js)
The WIT files and the Python/JavaScript SDK are written into DIR/.stratus/, which every
build makes afresh. Building runs the package's build code (cargo build scripts and proc
macros run natively): build only packages you trust.

Examples:
  stratus plugin build                 # the package in the current directory
  stratus plugin build plugins/hello";

const INSPECT_HELP: &str = "\
Examples:
  stratus plugin inspect plugins/hello            # a package directory (reads plugin.toml)
  stratus plugin inspect target/hello/plugin.wasm # a bare component";

const CALL_HELP: &str = "\
Runs one hook exactly as an agent would: same sandbox, limits and compiled-code cache
(<state>/cache, keyed by <state>/keys/cache.key). Without --context a default context is
used whose service directory is ./.stratus-call/a1 (CM hooks: ./.stratus-call/root and
./.stratus-call/work). Files the hook changed in its directories are listed afterwards.
Processes the hook started under the supervisor are stopped when the command exits.

Hooks: install-service install-data-source configure start stop grant-database-access
       revoke-database-access health-check start-proxy remove-nodes prepare run

Examples:
  stratus plugin call plugins/hello configure
  stratus plugin call plugins/mariadb grant-database-access --context ctx.json --grants grants.json
  stratus plugin call plugins/haproxy start-proxy --nodes nodes.json

The exit code is non-zero when the hook fails; the failure's reason is printed.";

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin package: manifest, every hook of the world, a template, a README.
    #[command(after_help = NEW_HELP)]
    New {
        /// The plugin's name (letters, digits, `-`, `_`, `.`; starting with a letter).
        name: String,
        /// The language of the skeleton.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// The WIT world it implements.
        #[arg(long, value_enum)]
        world: scaffold::NewWorld,
        /// Where to write it (default: a new directory named NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a package's component (plugin.wasm) with its language's tool.
    #[command(after_help = BUILD_HELP)]
    Build {
        /// The package directory (holding plugin.toml).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show a component's world, exports, imports and declared capabilities.
    #[command(after_help = INSPECT_HELP)]
    Inspect {
        /// A package directory or a component (.wasm).
        path: PathBuf,
    },
    /// Run one hook of a plugin locally, in the agent's sandbox.
    #[command(after_help = CALL_HELP)]
    Call {
        /// A package directory or a component (.wasm).
        package: PathBuf,
        /// The hook, as WIT names it (e.g. `configure`, `health-check`, `run`).
        hook: String,
        /// JSON service context (or CM context for `prepare`/`run`).
        #[arg(long)]
        context: Option<PathBuf>,
        /// JSON list of database grants, for grant-/revoke-database-access.
        #[arg(long)]
        grants: Option<PathBuf>,
        /// JSON list of proxy nodes, for start-proxy/remove-nodes.
        #[arg(long)]
        nodes: Option<PathBuf>,
    },
}

pub fn run(cmd: PluginCommand, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New {
            name,
            lang,
            world,
            dir,
        } => new::new_cmd(&name, lang, world, dir),
        PluginCommand::Build { dir } => build::build_cmd(&dir),
        PluginCommand::Inspect { path } => inspect_cmd(&path),
        PluginCommand::Call {
            package,
            hook,
            context,
            grants,
            nodes,
        } => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let state = crate::default_state_dir(state_dir);
            rt.block_on(call_cmd(&state, &package, &hook, context, grants, nodes))
        }
    }
}

fn inspect_cmd(path: &Path) -> anyhow::Result<ExitCode> {
    let pkg = Package::open(path)?;
    // The same cap the agent holds components to, checked before anything is read.
    let cap = stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES;
    let size = std::fs::metadata(&pkg.component_path)
        .with_context(|| format!("reading {}", pkg.component_path.display()))?
        .len();
    if size > cap {
        anyhow::bail!(
            "{} is {size} bytes, over the limit of {cap} bytes for components; nothing was read",
            pkg.component_path.display()
        );
    }
    let bytes = std::fs::read(&pkg.component_path)
        .with_context(|| format!("reading {}", pkg.component_path.display()))?;
    let info =
        inspect(&bytes).with_context(|| format!("inspecting {}", pkg.component_path.display()))?;
    println!(
        "component: {} ({} bytes)",
        pkg.component_path.display(),
        bytes.len()
    );
    match info.world {
        Some(w) => println!("world:     {w}"),
        None => println!("world:     none (exports match no Stratus world)"),
    }
    if let (Some(m), Some(found)) = (&pkg.manifest, info.world)
        && m.plugin.world != found
    {
        println!("warning:   plugin.toml declares world `{}`", m.plugin.world);
    }
    println!("exports:");
    for e in &info.exports {
        println!("  {}", e.name);
        for f in &e.functions {
            println!("    {f}");
        }
    }
    println!("imports:");
    for i in &info.imports {
        println!("  {i}");
    }
    print_memory(&bytes);
    match &pkg.manifest {
        None => println!("capabilities: none (no plugin.toml next to the component)"),
        Some(m) => {
            println!("plugin:    {} {}", m.plugin.name, m.plugin.version);
            print_capabilities(&m.capabilities);
            print_risky_programs(&m.plugin.name, &m.capabilities);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The component's initial linear memory against what a pool slot keeps resident between
/// calls, with the fix when a Rust plugin's is over it (its 1 MiB default stack).
fn print_memory(bytes: &[u8]) {
    let initial = stratus_plugin_runtime::initial_memory_bytes(bytes);
    let rust = stratus_plugin_runtime::language_of(bytes)
        == Some(stratus_plugin_runtime::manifest::Language::Rust);
    for line in memory_lines(initial, rust) {
        println!("{line}");
    }
}

fn memory_lines(initial: Option<u64>, rust: bool) -> Vec<String> {
    let kept = stratus_plugin_runtime::KEPT_RESIDENT_BYTES as u64;
    let Some(initial) = initial else {
        return vec!["memory:    none defined".into()];
    };
    let (kib, kept_kib) = (initial >> 10, kept >> 10);
    if initial <= kept {
        return vec![format!(
            "memory:    {kib} KiB at start, within the {kept_kib} KiB kept resident between calls"
        )];
    }
    let mut lines = vec![format!(
        "memory:    {kib} KiB at start, over the {kept_kib} KiB kept resident between calls: \
         every call faults the pages it touches past them in again"
    )];
    if rust {
        lines.push(
            "hint:      link with a 64 KiB stack (`-C link-arg=-zstack-size=65536`, as \
             `stratus plugin new` writes in .cargo/config.toml)"
                .into(),
        );
    }
    lines
}

/// One warning per granted program known to run arbitrary code (the list is in
/// `stratus_model::plugin::risky`), as `stratus launch` prints them.
fn print_risky_programs(plugin: &str, c: &stratus_plugin_runtime::Capabilities) {
    if let Some(why) = stratus_model::plugin::risky::run_as_warning(c.run_as) {
        println!("warning:   plugin `{plugin}` {why}");
    }
    for p in &c.programs {
        if let Some(why) = stratus_model::plugin::risky::warning(p.as_str()) {
            println!("warning:   plugin `{plugin}` may run {why}");
        }
    }
}

fn print_capabilities(c: &stratus_plugin_runtime::Capabilities) {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    println!("capabilities:");
    println!("  memory-mb:    {}", c.memory_mb);
    println!("  timeout-ms:   {}", c.timeout_ms);
    println!("  output-bytes: {}", c.output_bytes);
    println!(
        "  dirs:         {}",
        list(
            c.dirs
                .iter()
                .map(|d| format!("{} ({})", d.dir, access(d.access)))
                .collect()
        )
    );
    println!(
        "  programs:     {}",
        list(c.programs.iter().map(|p| p.to_string()).collect())
    );
    println!(
        "  network:      {}",
        list(c.network.iter().map(|n| n.to_string()).collect())
    );
    // Values may be credentials; keys say enough.
    println!("  env:          {}", list(c.env.keys().cloned().collect()));
    println!(
        "  program-env:  {}",
        list(c.program_env.iter().map(|p| p.to_string()).collect())
    );
    println!("  processes:    {}", c.processes);
    println!("  run-as:       {}", c.run_as);
}

fn access(a: stratus_plugin_runtime::Access) -> &'static str {
    match a {
        stratus_plugin_runtime::Access::ReadOnly => "read-only",
        stratus_plugin_runtime::Access::ReadWrite => "read-write",
    }
}

/// The cache key: 32 random bytes kept hex-encoded in a 0600 file, created on first use.
pub(crate) fn cache_key(state: &Path) -> anyhow::Result<[u8; 32]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.join("keys/cache.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex_decode(text.trim())
            .with_context(|| format!("{} is not a hex key", path.display()))?;
        return bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()));
    }
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(key)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn call_cmd(
    state: &Path,
    package: &Path,
    hook: &str,
    context: Option<PathBuf>,
    grants: Option<PathBuf>,
    nodes: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let pkg = Package::open(package)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(state.join("cache")),
        cache_key: cache_key(state)?,
        max_concurrent_calls: 4,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })?;
    let plugin = runtime.load(&pkg).await?;
    println!(
        "plugin {} ({} world, sha256 {}…, compiled code: {:?})",
        plugin.name(),
        plugin.world(),
        &plugin.sha256()[..12],
        plugin.cache_status()
    );
    let defaulted = context.is_none();
    let call = inputs::build_call(hook, plugin.name(), context, grants, nodes)?;
    let dirs = dirs_of(&call);
    if defaulted && let Some(service_dir) = dirs.get(&stratus_plugin_runtime::DirKind::Service) {
        inputs::install_templates(&pkg.dir, service_dir)?;
    }
    for (kind, dir) in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let granted = plugin
            .capabilities()
            .dir(*kind)
            .map(|a| format!("{a:?}"))
            .unwrap_or("not granted".into());
        println!("{kind} directory: {} ({granted})", dir.display());
    }
    let supervisor =
        Supervisor::new(state.join("logs/plugin-call")).with_program_user(call_user()?);
    let env = CallEnv {
        sealed_package: None,
        dirs: dirs.clone(),
        server_address: "127.0.0.1".into(),
        supervisor: supervisor.clone(),
        capabilities: None,
        secrets: call.secrets(),
        labels: Labels::of(&call),
    };
    let before = snapshot::take(dirs.values());
    println!("calling {hook} …");
    let result = plugin.call(&call, &env).await;
    let after = snapshot::take(dirs.values());
    let code = match &result {
        Ok(o) => report::print_outcome(o),
        Err(f) => report::print_failure(f),
    };
    // File and process names are the plugin's text too: the same redaction as its output.
    let redactor = stratus_plugin_runtime::Redactor::new(call.secrets());
    println!("files changed:");
    snapshot::print_changes(&before, &after, &redactor);
    let stopped = supervisor.stop_all(Duration::from_secs(5)).await;
    for (_, name) in stopped {
        println!(
            "stopped supervised process `{}` (plugin call does not keep processes running)",
            redactor.redact(&name)
        );
    }
    Ok(code)
}

/// Who a local call's programs run as (when root): `STRATUS_PROGRAM_USER` if set, else a uid
/// of the program range that no server gets (one past the last), so a call shares nothing
/// with a server's programs nor with `nobody`'s (daemons' sockets often belong to nobody).
fn call_user() -> anyhow::Result<stratus_plugin_runtime::ProgramUser> {
    if let Ok(configured) = std::env::var(stratus_plugin_runtime::PROGRAM_USER_ENV) {
        return Ok(configured.parse()?);
    }
    let uid = stratus_provider::PROGRAM_UID_BASE + stratus_provider::ADDRESS_COUNT;
    Ok(stratus_plugin_runtime::ProgramUser { uid, gid: uid })
}

#[cfg(test)]
mod tests {
    use super::memory_lines;

    #[test]
    fn memory_over_the_kept_size_is_flagged_with_the_fix_for_rust_only() {
        assert_eq!(
            memory_lines(Some(128 << 10), true),
            ["memory:    128 KiB at start, within the 128 KiB kept resident between calls"]
        );
        // A Rust module with the default 1 MiB stack starts with 17 pages.
        let rust = memory_lines(Some(17 << 16), true);
        assert!(rust[0].starts_with("memory:    1088 KiB at start, over the 128 KiB"));
        assert!(rust[1].contains("-zstack-size=65536"), "{rust:?}");
        // An interpreter's memory is large by nature: no Rust hint.
        assert_eq!(memory_lines(Some(2 << 20), false).len(), 1);
        assert_eq!(memory_lines(None, true), ["memory:    none defined"]);
    }
}
