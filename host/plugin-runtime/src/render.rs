//! `render-template` and `enstratus-cfg`: the host renders with the running hook's context,
//! so plugins of every language get the same variables and the same errors.

use crate::bindings::host::Escaping as WitEscaping;
use crate::call::HostCtx;
use stratus_model::enstratus_cfg::enstratus_cfg as classic_cfg;
use stratus_model::template::{Escaping, render_escaped};
use stratus_model::template_variables::template_variables;

/// Largest rendered text: it is copied into the plugin's memory, so it can never usefully
/// exceed that memory, and a template repeating a long value must not exhaust the agent's.
fn limit(host: &HostCtx) -> usize {
    let memory = host.caps.memory_mb.saturating_mul(1 << 20);
    usize::try_from(memory).unwrap_or(usize::MAX)
}

fn no_context() -> String {
    "this hook has no service context to render (configuration-management hooks have none)".into()
}

/// `template` rendered with the hook's variables and `extra`, or the error the plugin reports.
pub(crate) fn render_template(
    host: &HostCtx,
    template: &str,
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
    render_escaped(template, &vars, escaping, limit(host)).map_err(|e| e.to_string())
}

/// The hook's context as `enstratus.cfg` text.
pub(crate) fn enstratus_cfg(host: &HostCtx) -> Result<String, String> {
    host.context
        .as_ref()
        .map(classic_cfg)
        .ok_or_else(no_context)
}
