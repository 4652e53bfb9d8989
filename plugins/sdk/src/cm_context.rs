//! Helpers for configuration-management adapters: settings and facts of a `CmContext`, and the
//! tool's own error lines when a run fails.

use std::collections::HashSet;

use crate::context::last_setting;
use crate::types::CmContext;

/// The last value of setting `key` (later settings override earlier ones, as in the manifest).
pub fn cm_setting<'a>(ctx: &'a CmContext, key: &str) -> Option<&'a str> {
    last_setting(&ctx.settings, key)
}

/// The context's scalar `stratus_*` facts, in the order adapters document them; the run list
/// is left to each adapter because tools want it in different shapes (array, joined string).
pub fn cm_facts(ctx: &CmContext) -> Vec<(&'static str, &str)> {
    vec![
        ("stratus_deployment", &ctx.deployment),
        ("stratus_tier", &ctx.tier),
        ("stratus_server_id", &ctx.server.id),
        ("stratus_server_name", &ctx.server.name),
        ("stratus_server_address", &ctx.server.address),
        ("stratus_server_root", &ctx.server_root),
        ("stratus_work_dir", &ctx.work_dir),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.as_str()))
    .collect()
}

/// The lines of `streams` (in order, trimmed) that `keep` accepts, each once since tools repeat
/// an error at several levels; when none is accepted, the last five lines of `stderr`, so a
/// failure always says something.
pub fn error_lines(streams: &[&str], stderr: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut seen = HashSet::new();
    let lines: Vec<&str> = streams
        .iter()
        .flat_map(|s| s.lines())
        .map(str::trim)
        .filter(|l| keep(l) && seen.insert(*l))
        .collect();
    if lines.is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn sample() -> CmContext {
        let setting = |key: &str, value: &str| Setting {
            key: key.into(),
            value: value.into(),
        };
        CmContext {
            deployment: "shop".into(),
            tier: "app".into(),
            server: ServerInfo {
                id: "app-1".into(),
                name: "shop-app-1".into(),
                address: "127.0.0.5".into(),
            },
            server_root: "/srv/root".into(),
            work_dir: "/srv/work".into(),
            run_list: vec!["role[app]".into()],
            settings: vec![setting("port", "80"), setting("port", "8080")],
            credentials: vec![],
        }
    }

    #[test]
    fn cm_setting_returns_the_last_value() {
        let ctx = sample();
        assert_eq!(cm_setting(&ctx, "port"), Some("8080"));
        assert_eq!(cm_setting(&ctx, "missing"), None);
    }

    #[test]
    fn cm_facts_name_every_scalar_part_of_the_context() {
        assert_eq!(
            cm_facts(&sample()),
            vec![
                ("stratus_deployment", "shop"),
                ("stratus_tier", "app"),
                ("stratus_server_id", "app-1"),
                ("stratus_server_name", "shop-app-1"),
                ("stratus_server_address", "127.0.0.5"),
                ("stratus_server_root", "/srv/root"),
                ("stratus_work_dir", "/srv/work"),
            ]
        );
    }

    #[test]
    fn error_lines_keep_matching_lines_once_in_stream_order() {
        let stdout = "ok\n  E: first\nE: second\n";
        let stderr = "E: first\nE: third\nnoise\n";
        let keep = |l: &str| l.starts_with("E:");
        assert_eq!(
            error_lines(&[stdout, stderr], stderr, keep),
            "E: first\nE: second\nE: third"
        );
        assert_eq!(
            error_lines(&[stderr, stdout], stderr, keep),
            "E: first\nE: third\nE: second"
        );
    }

    #[test]
    fn error_lines_fall_back_to_the_tail_of_stderr() {
        let stderr = "1\n2\n3\n4\n5\n6\n";
        assert_eq!(
            error_lines(&["", stderr], stderr, |_| false),
            "2\n3\n4\n5\n6"
        );
        assert_eq!(error_lines(&[""], "", |_| false), "");
    }
}
