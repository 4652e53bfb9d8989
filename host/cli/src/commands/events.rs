//! `stratus events [--follow] [--deployment NAME]`: the journal of what happened, as events.

use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use stratus_control::status as view;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// Only events of this deployment.
    #[arg(long)]
    pub deployment: Option<String>,
}

/// Events read from the journal at a time.
const PAGE: usize = 1000;

pub fn run(args: EventsArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let mut after = 0;
    loop {
        if let Some(store) = view::open_store(state_dir)? {
            // Page by page, so a long journal is printed whole without holding it at once.
            loop {
                let page = store.events_since(after, args.deployment.as_deref(), PAGE)?;
                for e in &page {
                    after = e.seq;
                    println!("{}", format_event(e));
                }
                if page.len() < PAGE {
                    break;
                }
            }
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn format_event(e: &stratus_store::EventRow) -> String {
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(e.time.max(0) as u64),
    );
    let mut who = e.component.clone();
    if let Some(d) = &e.deployment {
        who.push_str(&format!(" {d}"));
    }
    if let Some(s) = &e.server {
        who.push_str(&format!("/{s}"));
    }
    if let Some(s) = &e.service {
        who.push_str(&format!(" [{s}]"));
    }
    format!("{time} {:5} {who}: {}", e.level, e.message)
}
