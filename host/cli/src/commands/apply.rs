//! `stratus apply FILE [--dry-run]`: show what a new version of a running deployment's file
//! changes, then reconcile the deployment to it and follow until every tier is RUNNING at
//! its target (exit 0) or the deployment FAILED (exit 1). A refused file or change exits 2
//! and changes nothing.

use super::launch::follow;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use stratus_control::client::ControlClient;
use stratus_control::status::DeploymentView;
use stratus_protocol::{ErrorKind, OperatorReply, OperatorRequest};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The new version of the deployment file (TOML).
    pub file: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the control plane accepted the change instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (the work goes on).
    #[arg(long, default_value = "900")]
    pub timeout: u64,
    /// Print every event instead of a progress line.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: ApplyArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    if let Err(errors) =
        stratus_control::config::ControlProviders::published(state_dir).check_for_launch(&args.file)
    {
        eprintln!("{errors}");
        eprintln!("nothing was applied");
        return Ok(ExitCode::from(2));
    }
    let file = std::fs::canonicalize(&args.file)?;
    let program = std::env::current_exe()?;
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = ControlClient::connect_or_start(state_dir, &program).await?;
        client
            .request(OperatorRequest::Apply {
                file: file.to_string_lossy().into_owned(),
                dry_run: args.dry_run,
            })
            .await
    })?;
    let (deployment, changes) = match reply {
        OperatorReply::Applied {
            deployment,
            changes,
        } => (deployment, changes),
        OperatorReply::Error { message, kind } => {
            eprintln!("error: {message}");
            if kind == ErrorKind::Internal {
                return Ok(ExitCode::FAILURE);
            }
            if !message.ends_with("nothing was applied") {
                eprintln!("nothing was applied");
            }
            return Ok(ExitCode::from(2));
        }
        other => anyhow::bail!("unexpected answer from the control plane: {other:?}"),
    };
    if changes.is_empty() {
        println!("deployment {deployment}: the file changes nothing");
        return Ok(ExitCode::SUCCESS);
    }
    println!("changes to deployment {deployment}:");
    for c in &changes {
        println!("  {c}");
    }
    if args.dry_run || args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        state_dir,
        &deployment,
        Duration::from_secs(args.timeout),
        args.verbose,
        &[],
        &settled,
    )
}

/// RUNNING with every tier at its target count of running servers.
fn settled(d: &DeploymentView) -> bool {
    d.state == "RUNNING"
        && d.tiers.iter().all(|t| {
            t.target.is_none_or(|target| {
                t.servers.len() as u64 == u64::from(target.count)
                    && t.servers.iter().all(|s| {
                        s.agent == "RUNNING" && s.services.iter().all(|v| v.state == "RUNNING")
                    })
            })
        })
}
