//! A server's logs: its agent's log, or the output of the hooks that ran on it. The server is
//! looked up in the journal (never a path built from the request), and files are opened
//! without following links and read from their end, at most [`MAX_LOG_BYTES`]. The agent log
//! of a server on another machine (SSH hosts, cloud instances) is asked of its connected agent,
//! with the same bound; a 409 says when that agent is not connected.

use crate::ApiState;
use crate::problem::Problem;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use stratus_model::state::AgentState;
use utoipa::{IntoParams, ToSchema};

/// Most bytes of log one request returns (the end of the log).
pub const MAX_LOG_BYTES: u64 = 1 << 20;
/// Most hook log files read for one request (the latest ones).
pub const MAX_HOOK_FILES: usize = 256;

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// The agent's own log.
    #[default]
    Agent,
    /// What the hooks on this server logged and printed (secrets already masked).
    Hooks,
}

#[derive(Deserialize, IntoParams)]
pub struct LogsQuery {
    /// `agent` (default) or `hooks`.
    #[serde(default)]
    #[param(inline)]
    pub log: LogKind,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// A server's agent log or hook logs, as text.
#[utoipa::path(get, path = "/v1/deployments/{name}/servers/{server}/logs", tag = "logs",
    params(("name" = String, Path), ("server" = String, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn logs(
    State(st): State<ApiState>,
    Path((name, server)): Path<(String, String)>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    st.ctx.app.status(Some(&name))?;
    let row = st
        .ctx
        .store
        .servers::<AgentState>(&name)
        .map_err(|e| Problem::from(stratus_control::app::AppError::Store(e)))?
        .into_iter()
        .find(|s| s.id == server)
        .ok_or_else(|| Problem::not_found(format!("deployment {name} has no server {server}")))?;
    let text = match q.log {
        LogKind::Agent => match stratus_control::status::agent_dir(&st.ctx.store, &row) {
            Some(dir) => read_end(&dir, "agent.log").unwrap_or_default(),
            // On another machine: only its agent can read it.
            None => st.ctx.app.agent_log(&name, &row.id).await?.text,
        },
        LogKind::Hooks => {
            let dir = st.ctx.logs.dir().join("hooks").join(&name).join(&row.id);
            hook_logs(&dir)
        }
    };
    let text = match q.tail {
        Some(n) => tail(&text, n),
        None => text,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

/// Every hook log of a server, oldest first, the whole cut to its last [`MAX_LOG_BYTES`].
fn hook_logs(dir: &std::path::Path) -> String {
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            // DirEntry::metadata does not follow links: a link is not a file here.
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, e.file_name().into_string().ok()?))
        })
        .collect();
    files.sort();
    let skip = files.len().saturating_sub(MAX_HOOK_FILES);
    let mut out = String::new();
    for (_, name) in &files[skip..] {
        out.push_str(&read_end(dir, name).unwrap_or_default());
    }
    let cut = out.len().saturating_sub(MAX_LOG_BYTES as usize);
    let cut = (cut..=out.len())
        .find(|i| out.is_char_boundary(*i))
        .unwrap_or(out.len());
    out[cut..].to_string()
}

/// The last [`MAX_LOG_BYTES`] of `dir/name`, a regular file reached through no link.
fn read_end(dir: &std::path::Path, name: &str) -> Option<String> {
    if std::fs::symlink_metadata(dir)
        .ok()?
        .file_type()
        .is_symlink()
    {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(dir.join(name))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let start = meta.len().saturating_sub(MAX_LOG_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_LOG_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // A cut start begins mid-line: drop the partial line.
    Some(match (start > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_string(),
        _ => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_reached_through_a_link_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "outside\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("agent.log"))
            .unwrap();
        assert_eq!(read_end(dir.path(), "agent.log"), None);
        std::os::unix::fs::symlink(dir.path(), dir.path().join("linked")).unwrap();
        assert_eq!(read_end(&dir.path().join("linked"), "secret"), None);
        assert_eq!(read_end(dir.path(), "secret").as_deref(), Some("outside\n"));
    }

    #[test]
    fn a_long_log_is_read_from_its_end_and_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let line = "x".repeat(99) + "\n";
        let text = line.repeat((MAX_LOG_BYTES / 100 + 50) as usize) + "last\n";
        std::fs::write(dir.path().join("a.log"), &text).unwrap();
        let read = read_end(dir.path(), "a.log").unwrap();
        assert!(read.len() as u64 <= MAX_LOG_BYTES);
        assert!(read.starts_with('x') && read.ends_with("last\n"));
        assert_eq!(tail(&read, 2), format!("{line}last\n"));
    }
}
