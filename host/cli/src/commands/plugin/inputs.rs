//! What `plugin call` feeds the hook: the context (from JSON or a local default), grants,
//! nodes, and the package's templates installed into a default service directory.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use stratus_model::context::{CmContext, HookCall, ServerInfo, ServiceContext, World};

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn local_server() -> ServerInfo {
    ServerInfo {
        id: "local-1".into(),
        name: "local-1".into(),
        address: "127.0.0.1".into(),
    }
}

fn default_service_context(name: &str) -> anyhow::Result<ServiceContext> {
    let dir = std::env::current_dir()?.join(".stratus-call/a1");
    Ok(ServiceContext {
        deployment: "local".into(),
        tier: "local".into(),
        server: local_server(),
        service_id: "1".into(),
        service_name: name.into(),
        service_dir: dir.to_string_lossy().into_owned(),
        settings: Vec::new(),
        ports: Vec::new(),
        credentials: Vec::new(),
        data_source: None,
        dependencies: Vec::new(),
    })
}

fn default_cm_context() -> anyhow::Result<CmContext> {
    let base = std::env::current_dir()?.join(".stratus-call");
    Ok(CmContext {
        deployment: "local".into(),
        tier: "local".into(),
        server: local_server(),
        server_root: base.join("root").to_string_lossy().into_owned(),
        work_dir: base.join("work").to_string_lossy().into_owned(),
        run_list: Vec::new(),
        settings: Vec::new(),
        credentials: Vec::new(),
    })
}

pub fn build_call(
    hook: &str,
    name: &str,
    context: Option<PathBuf>,
    grants: Option<PathBuf>,
    nodes: Option<PathBuf>,
) -> anyhow::Result<HookCall> {
    let Some(world) = HookCall::world_of(hook) else {
        bail!("unknown hook `{hook}` (see `stratus plugin call --help` for the list)");
    };
    if world == World::Cm {
        let ctx = match context {
            Some(p) => read_json(&p)?,
            None => default_cm_context()?,
        };
        return Ok(if hook == "prepare" {
            HookCall::CmPrepare { ctx }
        } else {
            HookCall::CmRun { ctx }
        });
    }
    let ctx = match context {
        Some(p) => read_json(&p)?,
        None => default_service_context(name)?,
    };
    let grants = || -> anyhow::Result<_> {
        grants
            .as_deref()
            .map(read_json)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let nodes = || -> anyhow::Result<_> {
        nodes
            .as_deref()
            .map(read_json)
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(match hook {
        "install-service" => HookCall::InstallService { ctx },
        "install-data-source" => HookCall::InstallDataSource { ctx },
        "configure" => HookCall::Configure { ctx },
        "start" => HookCall::Start { ctx },
        "stop" => HookCall::Stop { ctx },
        "health-check" => HookCall::HealthCheck { ctx },
        "grant-database-access" => HookCall::GrantDatabaseAccess {
            ctx,
            grants: grants()?,
        },
        "revoke-database-access" => HookCall::RevokeDatabaseAccess {
            ctx,
            grants: grants()?,
        },
        "start-proxy" => HookCall::StartProxy {
            ctx,
            nodes: nodes()?,
        },
        "remove-nodes" => HookCall::RemoveNodes {
            ctx,
            nodes: nodes()?,
        },
        other => bail!("unknown hook `{other}`"),
    })
}

/// With the default context, the service directory gets the package's `cfg/` and `files/`
/// as an agent's install would, unless they are already there.
pub fn install_templates(package_dir: &Path, service_dir: &Path) -> anyhow::Result<()> {
    for sub in ["cfg", "files"] {
        let (src, dst) = (package_dir.join(sub), service_dir.join(sub));
        if src.is_dir() && !dst.exists() {
            copy_tree(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            println!("copied {} into {}", src.display(), dst.display());
        }
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}
