//! `stratus terminate NAME` and `stratus shutdown`.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use stratus_control::client::ControlClient;
use stratus_control::status as view;
use stratus_model::state::DeploymentState;
use stratus_protocol::{OperatorReply, OperatorRequest};

#[derive(Debug, Args)]
pub struct TerminateArgs {
    pub name: String,
    /// Return at once instead of waiting for TERMINATED.
    #[arg(long)]
    pub no_wait: bool,
    /// Keep the servers' disks (their root directories) for a post-mortem; they move out of
    /// the way of a relaunch, and the output says where.
    #[arg(long)]
    pub keep_disks: bool,
}

pub fn run(args: TerminateArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let program = std::env::current_exe()?;
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = ControlClient::connect_or_start(state_dir, &program).await?;
        client
            .request(OperatorRequest::Terminate {
                name: args.name.clone(),
                keep_disks: args.keep_disks,
            })
            .await
    })?;
    if let OperatorReply::Error { message, .. } = reply {
        eprintln!("error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    println!("terminating deployment {}", args.name);
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(150));
        if let Some(store) = view::open_store(state_dir)?
            && let Some(row) = store.deployment::<DeploymentState>(&args.name)?
            && row.state == DeploymentState::Terminated
        {
            println!(
                "deployment {} TERMINATED after {:.1} s",
                args.name,
                started.elapsed().as_secs_f64()
            );
            let left = stratus_engine::terminate::disks_left_key(&args.name);
            for line in store.meta(&left)?.unwrap_or_default().lines() {
                eprintln!("warning: {line}");
            }
            if args.keep_disks {
                let key = stratus_engine::terminate::kept_disks_key(&args.name);
                match store.meta(&key)?.filter(|d| !d.is_empty()) {
                    Some(dir) => println!("server disks kept for a post-mortem under {dir}"),
                    None => println!("no server disk was kept (the deployment had no servers)"),
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() > Duration::from_secs(300) {
            eprintln!("deployment {} is not TERMINATED after 300 s", args.name);
            return Ok(ExitCode::FAILURE);
        }
    }
}

/// Stops the control plane of the state directory (deployments keep their state).
pub fn shutdown(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let mut client = ControlClient::connect(state_dir).await?;
        let pid = client.pid;
        client.request(OperatorRequest::Shutdown).await.map(|_| pid)
    });
    match result {
        Ok(pid) => {
            // Wait for it to be gone so callers (and tests) can rely on it.
            for _ in 0..100 {
                if !stratus_control::process_runs::process_runs(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("control plane (pid {pid}) stopped");
        }
        Err(e) => println!("{e}"),
    }
    Ok(ExitCode::SUCCESS)
}
