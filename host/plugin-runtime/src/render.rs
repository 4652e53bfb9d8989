//! `render-template` and `enstratus-cfg`: the host renders with the running hook's context,
//! so plugins of every language get the same variables and the same errors.

use crate::bindings::host::Escaping as WitEscaping;
use crate::call::HostCtx;
use stratus_model::enstratus_cfg::enstratus_cfg as classic_cfg;
use stratus_model::template::{Escaping, TemplateError, render_escaped};
use stratus_model::template_variables::template_variables;

/// Most bytes a rendered template may have (16 MiB): far above any configuration file, and
/// small enough that rendering, which host code does outside the hook's epoch deadline, ends
/// in well under a second however hostile the template.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Largest rendered text: [`MAX_RENDERED_BYTES`], or less when the plugin's memory is smaller,
/// since the text is copied into it.
fn limit(host: &HostCtx) -> usize {
    let memory = host.caps.memory_mb.saturating_mul(1 << 20);
    usize::try_from(memory)
        .unwrap_or(usize::MAX)
        .min(MAX_RENDERED_BYTES)
}

fn no_context() -> String {
    "this hook has no service context to render (configuration-management hooks have none)".into()
}

/// Most bytes of template and output rendered on the calling thread: a configuration file's
/// rendering takes microseconds, while the trip to a blocking thread and back doubled the cost
/// of a hook that renders one.
pub const INLINE_RENDER_BYTES: usize = 64 << 10;

/// `template` rendered with the hook's variables and `extra`, or the error the plugin reports.
/// A small rendering happens in place; one that outgrows [`INLINE_RENDER_BYTES`] runs on a
/// blocking thread so that a long one never stalls the agent's other work (its connection,
/// other hooks).
pub(crate) async fn render_template(
    host: &HostCtx,
    template: String,
    extra: Vec<(String, String)>,
    escaping: WitEscaping,
) -> Result<String, String> {
    let ctx = host.context.as_ref().ok_or_else(no_context)?;
    let mut vars = template_variables(ctx);
    vars.extend(extra);
    let escaping = match escaping {
        WitEscaping::None => Escaping::None,
        WitEscaping::TomlString => Escaping::TomlString,
        WitEscaping::JsonString => Escaping::JsonString,
    };
    let limit = limit(host);
    let small = limit.min(INLINE_RENDER_BYTES);
    if template.len() <= small {
        match render_escaped(&template, &vars, escaping, small) {
            // Only the full limit decides that a rendering is too large.
            Err(TemplateError::TooLarge { .. }) if small < limit => {}
            done => return done.map_err(|e| e.to_string()),
        }
    }
    tokio::task::spawn_blocking(move || render_escaped(&template, &vars, escaping, limit))
        .await
        .map_err(|e| format!("rendering task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// The hook's context as `enstratus.cfg` text.
pub(crate) fn enstratus_cfg(host: &HostCtx) -> Result<String, String> {
    host.context
        .as_ref()
        .map(|ctx| classic_cfg(ctx))
        .ok_or_else(no_context)
}
