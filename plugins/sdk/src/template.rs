//! `{{ name }}` templates. The host renders them with the running hook's context
//! (`render-template` in `wit/host.wit`), so plugins in every language share one set of
//! variables (docs/writing-a-plugin.md lists them) and the same errors for a typo.

use crate::host;
use crate::types::HookError;

pub use crate::host::Escaping;

/// Renders `text` with the hook's variables; an unknown variable is a non-retryable error
/// such as "line 2: unknown template variable `port.http.privat`".
pub fn render(text: &str) -> Result<String, HookError> {
    render_with(text, &[], Escaping::None)
}

/// Renders `text` with the hook's variables plus `extra` (which may replace them), escaping
/// every inserted value as `escaping` says.
pub fn render_with(
    text: &str,
    extra: &[(String, String)],
    escaping: Escaping,
) -> Result<String, HookError> {
    host::render_template(text, extra, escaping).map_err(HookError::fatal)
}
