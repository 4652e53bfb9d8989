//! File helpers for hooks: rendering `cfg/` templates into the service directory and turning
//! IO failures into `HookError`s whose message says what was being done to which path.

use std::io;
use std::path::{Path, PathBuf};

use crate::context::context_vars;
use crate::template::{self, TemplateError};
use crate::types::{HookError, ServiceContext};

impl From<TemplateError> for HookError {
    fn from(e: TemplateError) -> Self {
        HookError::fatal(e.to_string())
    }
}

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

/// Reads a file, naming the path in the error.
pub fn read_to_string(path: impl AsRef<Path>) -> Result<String, HookError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|e| io_error("reading", path, &e))
}

/// Writes a file, naming the path in the error.
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<(), HookError> {
    let path = path.as_ref();
    std::fs::write(path, contents).map_err(|e| io_error("writing", path, &e))
}

/// Appends one line (a newline is added) to a file, creating it if needed.
pub fn append_line(path: impl AsRef<Path>, line: &str) -> Result<(), HookError> {
    use std::io::Write;
    let path = path.as_ref();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_error("opening", path, &e))?;
    writeln!(f, "{line}").map_err(|e| io_error("appending to", path, &e))
}

/// `<service_dir>/<relative>`.
pub fn service_path(ctx: &ServiceContext, relative: &str) -> PathBuf {
    Path::new(&ctx.service_dir).join(relative)
}

/// Renders the template `<service_dir>/<template>` with the context's variables.
pub fn render_template(ctx: &ServiceContext, template: &str) -> Result<String, HookError> {
    let path = service_path(ctx, template);
    let text = read_to_string(&path)?;
    template::render(&text, &context_vars(ctx))
        .map_err(|e| HookError::fatal(format!("rendering {}: {e}", path.display())))
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
    use crate::context::tests::sample;

    fn ctx_in(dir: &Path) -> ServiceContext {
        let mut ctx = sample();
        ctx.service_dir = dir.to_str().unwrap().to_string();
        ctx
    }

    #[test]
    fn render_file_writes_the_rendered_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cfg")).unwrap();
        std::fs::write(
            dir.path().join("cfg/app.conf"),
            "listen {{ port.http.private }}\n",
        )
        .unwrap();
        let out = render_file(&ctx_in(dir.path()), "cfg/app.conf", "app.conf").unwrap();
        assert_eq!(out, dir.path().join("app.conf"));
        assert_eq!(std::fs::read_to_string(out).unwrap(), "listen 8080\n");
    }

    #[test]
    fn render_file_errors_name_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx_in(dir.path());
        let missing = render_file(&ctx, "cfg/none.conf", "x").unwrap_err();
        assert!(
            missing.message.starts_with("reading "),
            "{}",
            missing.message
        );
        assert!(
            missing
                .message
                .ends_with("cfg/none.conf: No such file or directory"),
            "{}",
            missing.message
        );
        assert!(!missing.retryable);

        std::fs::write(dir.path().join("bad.conf"), "a\n{{ nope }}\n").unwrap();
        let bad = render_file(&ctx, "bad.conf", "x").unwrap_err();
        assert!(
            bad.message
                .contains("bad.conf: line 2: unknown template variable `nope`"),
            "{}",
            bad.message
        );
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn append_line_appends() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.log");
        append_line(&log, "configure").unwrap();
        append_line(&log, "start").unwrap();
        assert_eq!(std::fs::read_to_string(log).unwrap(), "configure\nstart\n");
    }
}
