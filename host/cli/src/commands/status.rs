//! `stratus status [NAME] [--output json]`.

use clap::{Args, ValueEnum};
use std::path::Path;
use std::process::ExitCode;
use stratus_control::status::{self as view, StatusView, TierView};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this deployment.
    pub name: Option<String>,
    #[arg(long, short, value_enum, default_value = "text")]
    pub output: Output,
}

pub fn run(args: StatusArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let view = match view::open_store(state_dir)? {
        Some(store) => view::status(&store, args.name.as_deref())?,
        None => StatusView {
            deployments: Vec::new(),
        },
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Text => print_text(&view),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_text(view: &StatusView) {
    if view.deployments.is_empty() {
        println!("no deployments");
    }
    for d in &view.deployments {
        println!("deployment {}: {}", d.name, d.state);
        if let Some(r) = &d.reason {
            println!("  reason: {}", indented(r, "    "));
        }
        for e in &d.endpoints {
            println!("  endpoint: http://{e}/");
        }
        for t in &d.tiers {
            println!("  tier {}", tier_line(t));
            for s in &t.servers {
                let services: Vec<String> = s
                    .services
                    .iter()
                    .map(|v| format!("{} (a{}) {}", v.name, v.id.trim_start_matches('a'), v.state))
                    .collect();
                println!(
                    "    {:<14} {:<15} agent {:<10} {}",
                    s.id,
                    s.address,
                    s.agent,
                    services.join(", ")
                );
                if let Some(line) = s.metrics_line() {
                    println!("      {line}");
                }
                for c in &s.cm {
                    let summary = indented(&c.summary, "        ");
                    println!("      cm {} {}: {summary}", c.unit, c.state);
                }
                for v in &s.services {
                    if let Some(h) = &v.health {
                        println!(
                            "      health {} {}: {} (at {}, restarts {})",
                            v.name,
                            h.status,
                            indented(&h.message, "        "),
                            h.checked_at,
                            h.restarts
                        );
                    }
                }
                for v in &s.services {
                    for p in &v.processes {
                        print_process(&v.name, p);
                    }
                }
                if let Some(r) = &s.replacing {
                    println!("      being replaced: {}", indented(r, "        "));
                }
                for w in &s.waiting {
                    println!(
                        "      {} {} ({}): attempt {} of {} at {}",
                        w.hook,
                        w.state,
                        indented(&w.message, "        "),
                        w.next_attempt,
                        w.attempts,
                        w.next_attempt_at
                    );
                }
            }
        }
    }
}

/// Lines of a crashed process's output tail the text view shows (`--output json` has it
/// all).
const TAIL_LINES: usize = 5;

/// A supervised process that crashed: its restarts, how it last ended, and, while it is in a
/// crash loop, the last lines of its output.
fn print_process(service: &str, p: &stratus_control::status::ProcessView) {
    println!(
        "      process {service}/{} {}: restarts {}, last {} at {}",
        p.name, p.state, p.restarts, p.last_exit, p.last_exit_at
    );
    if !p.crash_loop {
        return;
    }
    let lines: Vec<&str> = p.output_tail.lines().collect();
    for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
        println!("        | {line}");
    }
}

/// `app: 2 of 1..4` (running servers of the target, within the bounds), or the name alone when
/// the target is unknown.
fn tier_line(t: &TierView) -> String {
    let running = t.servers.iter().filter(|s| s.agent == "RUNNING").count();
    match &t.target {
        Some(target) if running as u64 == u64::from(target.count) => format!(
            "{}: {} of {}..{}",
            t.name, target.count, target.min, target.max
        ),
        Some(target) => format!(
            "{}: {running} running, target {} of {}..{}",
            t.name, target.count, target.min, target.max
        ),
        None => t.name.clone(),
    }
}

/// `text` with its further lines behind `indent`: a plugin's message can hold newlines, and
/// none of its lines may read as a line of this report (`deployment … RUNNING`).
pub(crate) fn indented(text: &str, indent: &str) -> String {
    text.replace('\n', &format!("\n{indent}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn further_lines_of_a_message_are_indented() {
        assert_eq!(super::indented("a\nb\nc", "  "), "a\n  b\n  c");
        assert_eq!(super::indented("one line", "  "), "one line");
    }
}
