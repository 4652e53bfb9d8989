//! Running `stratus` as a plugin author does, outside the launch harness: in a directory of
//! the test's, with the state directory inside it.

use std::path::Path;
use std::process::{Command, Output};

/// `stratus ARGS` run in `cwd`, with `<cwd>/state` as the state directory.
pub fn stratus_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .current_dir(cwd)
        .env("STRATUS_STATE_DIR", cwd.join("state"))
        .args(args)
        .output()
        .expect("run stratus")
}

/// A finished command's standard output followed by its standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
