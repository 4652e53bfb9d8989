//! Running SQL with the `mariadb` client as the server's admin over its unix socket, logging
//! in with the option file `admin` wrote. SQL always travels on stdin (a string, or a file for
//! a data source), never in argv, so passwords in it stay out of process listings and logs.

use crate::layout::{CLIENT, socket_arg};
use std::path::Path;
use stratus_plugin_sdk::service::*;

/// What a statement batch runs against.
pub struct Target<'a> {
    /// The admin option file (`Layout::admin_cnf`).
    pub login: &'a Path,
    pub socket: &'a Path,
    pub database: Option<&'a str>,
    pub timeout_ms: u32,
}

/// Runs `sql` and returns the client's stdout (batch mode, no column names). `what` names the
/// operation in errors; `secrets` are scrubbed from the client's error text.
pub fn run(
    target: &Target,
    what: &str,
    sql: String,
    secrets: &[&str],
) -> Result<String, HookError> {
    let cmd = command(target, Some(sql))?;
    let out = host::run(&cmd).map_err(|e| HookError::fatal(format!("{what}: {e}")))?;
    finish(what, out, secrets)
}

/// Runs the SQL in the file `sql` (an absolute path in the service directory), which the
/// client reads as its standard input through `host.run-with-files`: a dump of any size never
/// passes through the plugin's memory.
pub fn run_file(target: &Target, what: &str, sql: &Path) -> Result<(), HookError> {
    let cmd = command(target, None)?;
    let files = host::CommandFiles {
        stdin_file: Some(sql.display().to_string()),
        stdout_file: None,
    };
    let out =
        host::run_with_files(&cmd, &files).map_err(|e| HookError::fatal(format!("{what}: {e}")))?;
    finish(what, out, &[]).map(drop)
}

/// The client logging in as `target` says, reading `stdin`.
fn command(target: &Target, stdin: Option<String>) -> Result<host::Command, HookError> {
    let mut args = vec![
        // Must come first; the client then reads that file and no other (no /etc/mysql).
        format!("--defaults-file={}", target.login.display()),
        format!("--socket={}", socket_arg(target.socket)?),
        "--batch".into(),
        "--skip-column-names".into(),
        "--connect-timeout=5".into(),
        // The environment is empty, so the client cannot guess a character set from a locale.
        "--default-character-set=utf8mb4".into(),
    ];
    if let Some(db) = target.database {
        args.push(format!("--database={db}"));
    }
    Ok(host::Command {
        program: CLIENT.into(),
        args,
        env: vec![],
        working_dir: None,
        timeout_ms: target.timeout_ms,
        stdin,
    })
}

/// The client's stdout, or an error naming `what` and the client's cleaned error text.
fn finish(what: &str, out: host::CommandOutput, secrets: &[&str]) -> Result<String, HookError> {
    if out.exit_code == Some(0) {
        return Ok(out.stdout);
    }
    let status = match out.exit_code {
        Some(c) => format!("exit code {c}"),
        None => "a signal".to_string(),
    };
    let text = clean_error(&out.stderr, secrets);
    let message = format!("{what}: mariadb ended with {status}: {text}");
    // ERROR 2002/2013: the server is not (yet) accepting connections on its socket.
    Err(
        if text.contains("ERROR 2002") || text.contains("ERROR 2013") {
            HookError::retryable(message)
        } else {
            HookError::fatal(message)
        },
    )
}

/// The client's error lines without the statement text it quotes after `near '`, which may
/// hold a password, and without any of `secrets`.
pub fn clean_error(stderr: &str, secrets: &[&str]) -> String {
    let mut lines = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let mut line = match line.find(" near '") {
            Some(cut) => format!("{} (statement text omitted)", &line[..cut]),
            None => line.to_string(),
        };
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            line = line.replace(s, "<redacted>");
        }
        lines.push(line);
    }
    if lines.is_empty() {
        "no error output".into()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_drops_quoted_statements_and_secrets() {
        let err = "ERROR 1064 (42000) at line 2: You have an error in your SQL syntax; check the \
                   manual near 'IDENTIFIED BY 'hunter2'' at line 1\n";
        let text = clean_error(err, &["hunter2"]);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ERROR 1064") && text.contains("statement text omitted"));
        assert_eq!(clean_error("pw=hunter2", &["hunter2"]), "pw=<redacted>");
        assert_eq!(clean_error("", &[]), "no error output");
    }
}
