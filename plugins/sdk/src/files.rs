//! File helpers for hooks: rendering `cfg/` templates into the service directory and turning
//! IO failures into `HookError`s whose message says what was being done to which path.

use std::io;
use std::path::{Path, PathBuf};

use crate::no_follow::{self, Mode};
use crate::template::{self, Escaping};
use crate::types::{HookError, ServiceContext};

/// A non-retryable `HookError` with `message`.
pub fn hook_error(message: impl Into<String>) -> HookError {
    HookError::fatal(message)
}

/// `"<action> <path>: <error>"`, e.g. `reading /etc/passwd: No such file or directory`. The
/// `(os error N)` suffix is dropped: WASI errno numbers differ from the host's and mislead.
pub fn io_error(action: &str, path: &Path, err: &io::Error) -> HookError {
    let text = err.to_string();
    let text = match text.rfind(" (os error ") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    HookError::fatal(format!("{action} {}: {text}", path.display()))
}

/// Reads a file, naming the path in the error. A symbolic link is refused, not followed
/// (no_follow.rs says why), as by every file helper here.
pub fn read_to_string(path: impl AsRef<Path>) -> Result<String, HookError> {
    use std::io::Read;
    let path = path.as_ref();
    let mut text = String::new();
    no_follow::open(path, Mode::Read)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| io_error("reading", path, &e))?;
    Ok(text)
}

/// Writes (creates or truncates) a file, naming the path in the error.
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<(), HookError> {
    use std::io::Write;
    let path = path.as_ref();
    no_follow::open(path, Mode::Replace(0o644))
        .and_then(|mut f| f.write_all(contents.as_ref()))
        .map_err(|e| io_error("writing", path, &e))
}

/// Appends one line (a newline is added) to a file, creating it if needed.
pub fn append_line(path: impl AsRef<Path>, line: &str) -> Result<(), HookError> {
    use std::io::Write;
    let path = path.as_ref();
    let mut f = no_follow::open(path, Mode::Append).map_err(|e| io_error("opening", path, &e))?;
    writeln!(f, "{line}").map_err(|e| io_error("appending to", path, &e))
}

/// `<service_dir>/<relative>`.
pub fn service_path(ctx: &ServiceContext, relative: &str) -> PathBuf {
    Path::new(&ctx.service_dir).join(relative)
}

/// Renders the template `<service_dir>/<template>` with the hook's variables.
pub fn render_template(ctx: &ServiceContext, template: &str) -> Result<String, HookError> {
    render_template_with(ctx, template, &[], Escaping::None)
}

/// [`render_template`] with `extra` variables and escaping (see [`template::render_with`]).
pub fn render_template_with(
    ctx: &ServiceContext,
    template: &str,
    extra: &[(String, String)],
    escaping: Escaping,
) -> Result<String, HookError> {
    let path = service_path(ctx, template);
    let text = read_to_string(&path)?;
    template::render_with(&text, extra, escaping)
        .map_err(|e| HookError::fatal(format!("rendering {}: {}", path.display(), e.message)))
}

/// Renders `<service_dir>/<template>` into `<service_dir>/<output>` and returns the output path.
pub fn render_file(
    ctx: &ServiceContext,
    template: &str,
    output: &str,
) -> Result<PathBuf, HookError> {
    let text = render_template(ctx, template)?;
    let out = service_path(ctx, output);
    write(&out, text)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_line_appends() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.log");
        append_line(&log, "configure").unwrap();
        append_line(&log, "start").unwrap();
        assert_eq!(std::fs::read_to_string(log).unwrap(), "configure\nstart\n");
    }

    #[test]
    fn helpers_refuse_a_planted_link_and_leave_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfile");
        std::fs::write(&target, "root only\n").unwrap();
        let link = dir.path().join("hooks.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = append_line(&link, "configure").unwrap_err();
        assert!(
            err.message
                .ends_with("symbolic link, which is never followed"),
            "{}",
            err.message
        );
        assert!(write(&link, "x").is_err());
        assert!(read_to_string(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root only\n");
    }

    #[test]
    fn io_errors_name_action_and_path_without_the_errno() {
        let err = read_to_string("/nonexistent/cfg/app.conf").unwrap_err();
        assert_eq!(
            err.message,
            "reading /nonexistent/cfg/app.conf: No such file or directory"
        );
        assert!(!err.retryable);
    }
}
