//! `stratus scale DEPLOYMENT TIER [COUNT] [--min N] [--max N]`: give a tier a new target and
//! follow the deployment until the tier has it (exit 0) or the deployment FAILED (exit 1). A
//! refused request (bounds, unknown deployment or tier, state, capacity) exits 2, changing
//! nothing.

use super::launch::follow;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use stratus_control::client::ControlClient;
use stratus_control::status::{DeploymentView, TierView};
use stratus_protocol::{ErrorKind, OperatorReply, OperatorRequest};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The deployment.
    pub deployment: String,
    /// The tier to scale.
    pub tier: String,
    /// How many servers the tier should have (within its bounds); left out, the current count
    /// moved into the new bounds.
    pub count: Option<u32>,
    /// The tier's new lower bound.
    #[arg(long)]
    pub min: Option<u32>,
    /// The tier's new upper bound.
    #[arg(long)]
    pub max: Option<u32>,
    /// Return once the control plane accepted the new target instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (the scaling goes on).
    #[arg(long, default_value = "900")]
    pub timeout: u64,
    /// Print every event instead of a progress line.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: ScaleArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    if args.count.is_none() && args.min.is_none() && args.max.is_none() {
        eprintln!("error: give a COUNT, --min or --max (or several); nothing was scaled");
        return Ok(ExitCode::from(2));
    }
    let program = std::env::current_exe()?;
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = ControlClient::connect_or_start(state_dir, &program).await?;
        client
            .request(OperatorRequest::Scale {
                name: args.deployment.clone(),
                tier: args.tier.clone(),
                count: args.count,
                min: args.min,
                max: args.max,
            })
            .await
    })?;
    match reply {
        OperatorReply::Accepted { .. } => {}
        OperatorReply::Error { message, kind } => {
            eprintln!("error: {message}");
            if kind == ErrorKind::Internal {
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("nothing was scaled");
            return Ok(ExitCode::from(2));
        }
        other => anyhow::bail!("unexpected answer from the control plane: {other:?}"),
    }
    println!(
        "scaling tier {} of deployment {}",
        args.tier, args.deployment
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let tier = args.tier.clone();
    follow(
        state_dir,
        &args.deployment,
        Duration::from_secs(args.timeout),
        args.verbose,
        &[],
        &move |d| reached(d, &tier),
    )
}

/// Whether deployment `d` is RUNNING with tier `tier` at its target: exactly that many live
/// servers, each with its agent and services RUNNING.
fn reached(d: &DeploymentView, tier: &str) -> bool {
    d.state == "RUNNING" && d.tiers.iter().any(|t| t.name == tier && tier_at_target(t))
}

fn tier_at_target(t: &TierView) -> bool {
    let Some(target) = &t.target else {
        return false;
    };
    let live: Vec<_> = t
        .servers
        .iter()
        .filter(|s| s.agent != "TERMINATED")
        .collect();
    live.len() as u64 == u64::from(target.count)
        && live
            .iter()
            .all(|s| s.agent == "RUNNING" && s.services.iter().all(|v| v.state == "RUNNING"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_control::status::ServerView;
    use stratus_engine::targets::TierTarget;

    fn server(id: &str, agent: &str) -> ServerView {
        ServerView {
            id: id.into(),
            name: id.into(),
            address: "127.0.0.2".into(),
            provider: "local".into(),
            pid: None,
            agent: agent.into(),
            cm: Vec::new(),
            waiting: Vec::new(),
            services: Vec::new(),
            replacing: None,
            cpu_percent: None,
            memory_bytes: None,
            memory_percent: None,
            sampled_at_ms: None,
        }
    }

    #[test]
    fn a_tier_is_at_its_target_only_with_exactly_that_many_running_servers() {
        let target = TierTarget {
            min: 1,
            max: 4,
            count: 2,
        };
        let mut t = TierView {
            name: "app".into(),
            target: Some(target),
            servers: vec![server("app-1", "RUNNING"), server("app-2", "STARTING")],
            ..TierView::default()
        };
        assert!(!tier_at_target(&t));
        t.servers[1].agent = "RUNNING".into();
        assert!(tier_at_target(&t));
        t.servers.push(server("app-3", "TERMINATED"));
        assert!(tier_at_target(&t), "an ended server does not count");
        t.servers.push(server("app-4", "RUNNING"));
        assert!(!tier_at_target(&t), "one too many");
        t.target = None;
        assert!(!tier_at_target(&t));
    }
}
