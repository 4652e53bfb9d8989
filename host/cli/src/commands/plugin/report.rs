//! How `plugin call` prints a hook's outcome or failure.

use std::process::ExitCode;
use stratus_plugin_runtime::{CallFailure, HookOutcome, HookValue, LogRecord};

fn print_captured(stdout: &str, stderr: &str, truncated: bool, logs: &[LogRecord]) {
    for l in logs {
        println!("log {:?}: {}", l.level, l.message);
    }
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.is_empty() {
            println!("--- {name} ---\n{}", text.trim_end());
        }
    }
    if truncated {
        println!("(output was cut at the plugin's output-bytes limit)");
    }
}

pub fn print_outcome(o: &HookOutcome) -> ExitCode {
    print_captured(&o.stdout, &o.stderr, o.truncated, &o.logs);
    for d in &o.denials {
        println!("denied: {d}");
    }
    if let Some(s) = &o.status {
        println!("status: {s}");
    }
    match &o.value {
        HookValue::Unit => println!("result: ok ({} ms)", o.duration.as_millis()),
        HookValue::Health(h) => println!(
            "result: health {:?}: {} ({} ms)",
            h.status,
            h.message,
            o.duration.as_millis()
        ),
        HookValue::Cm(r) => {
            println!("result: {} ({} ms)", r.summary, o.duration.as_millis());
            for p in &r.produced {
                println!("  produced {p}");
            }
        }
    }
    ExitCode::SUCCESS
}

pub fn print_failure(f: &CallFailure) -> ExitCode {
    print_captured(&f.stdout, &f.stderr, f.truncated, &f.logs);
    for d in &f.denials {
        println!("denied: {d}");
    }
    if let Some(s) = &f.status {
        println!("status: {s}");
    }
    println!(
        "result: FAILED after {} ms: {}",
        f.duration.as_millis(),
        f.kind
    );
    ExitCode::FAILURE
}
