//! `stratus launch FILE`: validate (each package against its manifest too), hand the deployment to the control plane (starting one if
//! needed), and follow it live until RUNNING (exit 0) or FAILED (exit 1, naming the failed
//! step, server, hook and error).

use super::{events::format_event, status::print_text};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use stratus_control::client::ControlClient;
use stratus_control::status::{self as view, DeploymentView};
use stratus_model::SpecError;
use stratus_model::state::DeploymentState;
use stratus_protocol::{OperatorReply, OperatorRequest};

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The deployment file (TOML).
    pub file: PathBuf,
    /// Return once the control plane accepted the launch instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following after this many seconds (the launch goes on).
    #[arg(long, default_value = "900")]
    pub timeout: u64,
    /// Print every event instead of a progress line.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(args: LaunchArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    // The same checks the control plane makes, so a refusal comes before anything starts.
    let (spec, warnings) = match stratus_control::config::ControlProviders::published(state_dir)
        .check_for_launch(&args.file)
    {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("nothing was launched");
            return Ok(ExitCode::from(2));
        }
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    if let Some(problem) = unreachable_state_dir(state_dir)? {
        eprintln!("error: {problem}");
        eprintln!("nothing was launched");
        return Ok(ExitCode::from(2));
    }
    let file = std::fs::canonicalize(&args.file)?;
    // The control plane records the same warnings as events, naming the canonical file.
    let shown: Vec<String> = warnings
        .into_iter()
        .map(|w| {
            SpecError {
                file: file.clone(),
                ..w
            }
            .to_string()
        })
        .collect();
    let name = spec.name.to_string();
    let program = std::env::current_exe()?;
    let rt = tokio::runtime::Runtime::new()?;
    let reply = rt.block_on(async {
        let mut client = ControlClient::connect_or_start(state_dir, &program).await?;
        client
            .request(OperatorRequest::Launch {
                file: file.to_string_lossy().into_owned(),
            })
            .await
    })?;
    match reply {
        OperatorReply::Accepted { .. } => {}
        OperatorReply::Error { message, .. } => {
            eprintln!("error: {message}");
            return Ok(ExitCode::FAILURE);
        }
        other => anyhow::bail!("unexpected answer from the control plane: {other:?}"),
    }
    println!(
        "launching deployment {name} (state directory {})",
        state_dir.display()
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        state_dir,
        &name,
        Duration::from_secs(args.timeout),
        args.verbose,
        &shown,
        &|d| d.state == "RUNNING",
    )
}

/// Run as root, Stratus runs the programs plugins start as the program user, and they reach
/// their service directories by path beneath the state directory: every directory on the way
/// must let that user search it, or mariadbd, haproxy and the rest fail at once.
fn unreachable_state_dir(state_dir: &Path) -> anyhow::Result<Option<String>> {
    use stratus_plugin_runtime::{PROGRAM_USER_ENV, ProgramUser, program_user::unsearchable};
    let configured = match std::env::var(PROGRAM_USER_ENV) {
        Ok(s) => Some(s.parse::<ProgramUser>()?),
        Err(_) => None,
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    // Unless one user is configured for all, each server's programs run as a uid of its own
    // that owns nothing on the way to the state directory: it searches as "others" do.
    let base = stratus_provider::PROGRAM_UID_BASE;
    let (user, who) = match configured {
        Some(user) => (user, format!("the program user {} ({user})", user.name())),
        None => (
            ProgramUser {
                uid: base,
                gid: base,
            },
            "the servers' program users (uids from 1879048192)".to_string(),
        ),
    };
    std::fs::create_dir_all(state_dir)?;
    Ok(unsearchable(state_dir, user).map(|blocked| {
        format!(
            "{who} cannot search {}, on the way to the state directory {}, \
             so the programs plugins run could not reach their service directories; use a state \
             directory every user can reach (e.g. STRATUS_STATE_DIR=/var/lib/stratus, the default \
             for root) or let others search {} (chmod o+x)",
            blocked.display(),
            state_dir.display(),
            blocked.display()
        )
    }))
}

/// Prints progress until the deployment is `done` (exit 0) or FAILED (exit 1).
pub fn follow(
    state_dir: &Path,
    name: &str,
    limit: Duration,
    verbose: bool,
    already_shown: &[String],
    done: &dyn Fn(&DeploymentView) -> bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = if verbose {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut after = 0;
    // The step the configuration worker is on, shown beside the counts.
    let mut current = String::new();
    let mut control_gone_since: Option<Instant> = None;
    let mut store = None;
    let mut pause = POLL;
    let mut last_view = None;
    loop {
        std::thread::sleep(pause);
        // Nobody works on the deployment once the control plane is gone: say so rather than
        // wait for the timeout (a second's grace covers a control plane being replaced).
        if control_plane_alive(state_dir) {
            control_gone_since = None;
        } else if control_gone_since
            .get_or_insert_with(Instant::now)
            .elapsed()
            > Duration::from_secs(1)
        {
            bar.finish_and_clear();
            eprintln!(
                "the control plane of {} stopped while {name} was in progress; start it again \
                 with `stratus serve` (it resumes the work from the journal) and follow with \
                 `stratus events --follow`",
                state_dir.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        if store.is_none() {
            store = view::open_store(state_dir)?;
        }
        let Some(store) = &store else {
            continue;
        };
        for e in store.events_since(after, Some(name), 1000)? {
            after = e.seq;
            if e.component == "configuration-worker" || e.component == "scaling-worker" {
                current = match &e.server {
                    Some(server) => format!("{server}: {}", e.message),
                    None => e.message.clone(),
                };
            }
            let important = (e.level != "INFO" && !already_shown.contains(&e.message))
                || e.component == "monitor-deployment"
                || e.component == "monitor-scaling-event";
            if verbose {
                println!("{}", format_event(&e));
            } else if important {
                bar.println(format_event(&e));
            }
        }
        // Between full views, at most one a second while the deployment is on its way, only
        // its own row is read: the view of a thousand servers took a tenth of a core.
        let on_its_way = store
            .deployment::<DeploymentState>(name)?
            .is_some_and(|r| !SETTLED.contains(&r.state.name()));
        if on_its_way && last_view.is_some_and(|t: Instant| t.elapsed() < VIEW_EVERY) {
            pause = POLL;
            continue;
        }
        let read = Instant::now();
        last_view = Some(read);
        let status = view::status(store, Some(name))?;
        // The view of a thousand servers takes a while to read: polling it back to back would
        // take a core from the launch it follows.
        pause = POLL.max(read.elapsed() * POLL_SHARE);
        let Some(d) = status.deployments.first() else {
            continue;
        };
        let servers: Vec<_> = d.tiers.iter().flat_map(|t| &t.servers).collect();
        let agents_up = servers.iter().filter(|s| s.agent == "RUNNING").count();
        let services: Vec<_> = servers.iter().flat_map(|s| &s.services).collect();
        let running = services.iter().filter(|s| s.state == "RUNNING").count();
        bar.set_message(format!(
            "{} {}: agents {agents_up}/{} RUNNING, services {running}/{} RUNNING  {current}",
            d.name,
            d.state,
            servers.len(),
            services.len()
        ));
        match d.state.as_str() {
            _ if done(d) => {
                bar.finish_and_clear();
                print_text(&status);
                println!(
                    "deployment {name} RUNNING after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                for e in &d.endpoints {
                    println!("point a browser or curl at http://{e}/");
                }
                return Ok(ExitCode::SUCCESS);
            }
            "FAILED" => {
                bar.finish_and_clear();
                eprintln!(
                    "deployment {name} FAILED: {}",
                    super::status::indented(
                        d.reason.as_deref().unwrap_or("no reason recorded"),
                        "    "
                    )
                );
                eprintln!("see `stratus events --deployment {name}` and `stratus logs`");
                return Ok(ExitCode::FAILURE);
            }
            // Terminated from elsewhere while in progress: nothing will make it done.
            "TERMINATED" => {
                bar.finish_and_clear();
                eprintln!("deployment {name} was terminated while in progress");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
        if started.elapsed() > limit {
            bar.finish_and_clear();
            eprintln!(
                "still {} after {} s; the work goes on (follow it with `stratus events --follow`)",
                d.state,
                limit.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
}

/// How often the progress display reads the store, at least.
const POLL: Duration = Duration::from_millis(150);

/// How often the full view is read while the deployment is on its way (for the progress line).
const VIEW_EVERY: Duration = Duration::from_secs(1);

/// Deployment states in which the full view decides whether following is done.
const SETTLED: [&str; 3] = ["RUNNING", "FAILED", "TERMINATED"];
/// The pause between two reads of the status is at least this many times the last read's
/// duration, so following a launch costs at most a fifth of a core.
const POLL_SHARE: u32 = 4;

/// Whether the control plane named in the state directory's `control.json` runs (a zombie
/// left to its parent does not count).
fn control_plane_alive(state_dir: &Path) -> bool {
    stratus_control::paths::StatePaths::new(state_dir)
        .control_info()
        .is_some_and(|info| stratus_control::process_runs::process_runs(info.pid))
}
