//! `host.run` and the checks shared with `host.spawn`: allow-listed absolute programs, no
//! shell, a cleared environment holding only the `program-env` variables (never a loader or
//! interpreter one, and a `PATH` outside the plugin's directories), a working directory
//! inside a granted directory, a timeout and bounded output. `host.run-with-files` runs the
//! same way with standard input and/or output connected to files (`command_files.rs`).

use crate::capabilities::{Capabilities, DirKind, normalize};
use crate::env::DirMap;
use crate::supervisor::Leaf;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use stratus_model::plugin::capabilities::program_env::check_program_env;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Why a program may not run; the `bool` is whether it is a capability denial to record.
pub(crate) struct Refusal {
    pub message: String,
    pub denial: Option<String>,
}

impl Refusal {
    pub(crate) fn denied(what: String) -> Refusal {
        Refusal {
            message: format!("capability denied: {what}"),
            denial: Some(what),
        }
    }
    pub(crate) fn invalid(message: String) -> Refusal {
        Refusal {
            message,
            denial: None,
        }
    }
}

/// A program request that passed the checks.
pub(crate) struct Checked {
    pub program: PathBuf,
    pub working_dir: PathBuf,
}

/// Checks a program and working directory against the capabilities.
pub(crate) fn check(
    caps: &Capabilities,
    dirs: &DirMap,
    sealed_package: Option<&Path>,
    program: &str,
    working_dir: Option<&str>,
    env: &[(String, String)],
) -> Result<Checked, Refusal> {
    let normal = normalize(Path::new(program));
    let service_dir = dirs.get(&DirKind::Service).map(PathBuf::as_path);
    let allowed = normal
        .as_deref()
        .filter(|p| caps.allows_program_in(p, service_dir));
    let Some(program) = allowed else {
        return Err(Refusal::denied(format!(
            "program {program} is not in the plugin's allowed programs"
        )));
    };
    if let Some((k, _)) = env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(Refusal::invalid(format!(
            "invalid environment variable name `{k}`"
        )));
    }
    let granted: Vec<&PathBuf> = caps.dirs.iter().filter_map(|g| dirs.get(&g.dir)).collect();
    check_program_env(&caps.program_env, granted.iter().map(|g| g.as_path()), env)
        .map_err(|e| Refusal::denied(e.to_string()))?;
    let working_dir = match working_dir {
        Some(w) => {
            let w = normalize(Path::new(w)).ok_or_else(|| {
                Refusal::invalid(format!("working-dir `{w}` must be an absolute path"))
            })?;
            // Compare resolved paths as well, so a symlink inside a granted dir cannot lead out.
            let real = std::fs::canonicalize(&w)
                .map_err(|e| Refusal::invalid(format!("working-dir {}: {e}", w.display())))?;
            let inside = granted.iter().any(|g| {
                w.starts_with(g) && std::fs::canonicalize(g).is_ok_and(|rg| real.starts_with(rg))
            });
            if !inside {
                return Err(Refusal::denied(format!(
                    "working-dir {} is not inside a granted directory",
                    w.display()
                )));
            }
            w
        }
        None => [DirKind::Service, DirKind::WorkDir, DirKind::ServerConfig]
            .iter()
            .filter(|k| caps.dir(**k).is_some())
            .find_map(|k| dirs.get(k).cloned())
            .ok_or_else(|| {
                Refusal::denied(
                    "running a program without any granted directory as working-dir".into(),
                )
            })?,
    };
    let program = sealed(caps, service_dir, sealed_package, program)?;
    Ok(Checked {
        program,
        working_dir,
    })
}

/// A program allowed only as `service:<path>` runs from the sealed copy of the package, which
/// the plugin cannot have rewritten; one also allowed by its absolute path runs as it is.
fn sealed(
    caps: &Capabilities,
    service_dir: Option<&Path>,
    sealed_package: Option<&Path>,
    program: &Path,
) -> Result<PathBuf, Refusal> {
    let (Some(service_dir), Some(sealed)) = (service_dir, sealed_package) else {
        return Ok(program.to_owned());
    };
    if caps.allows_program(program) {
        return Ok(program.to_owned());
    }
    let Ok(rel) = program.strip_prefix(service_dir) else {
        return Ok(program.to_owned());
    };
    let copy = sealed.join(rel);
    if !copy.is_file() {
        return Err(Refusal::invalid(format!(
            "program {} is not part of the installed package",
            program.display()
        )));
    }
    Ok(copy)
}

/// The outcome of a finished program.
pub(crate) struct Finished {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// Where a program's standard input comes from.
pub(crate) enum Input {
    /// `/dev/null`.
    Null,
    /// These bytes, written through a pipe.
    Bytes(String),
    /// An opened regular file, which the program reads itself.
    File(std::fs::File),
}

/// A program's standard streams: input, and a file for its output (`None`: captured, bounded).
pub(crate) struct Streams {
    pub stdin: Input,
    pub stdout: Option<std::fs::File>,
}

/// [`run_with`] with `stdin` as bytes and the output captured: the tests' shorthand.
#[cfg(test)]
pub(crate) async fn run(
    checked: &Checked,
    args: &[String],
    env: &[(String, String)],
    stdin: Option<String>,
    timeout: Duration,
    cap: usize,
    leaf: Leaf,
) -> Result<Finished, String> {
    let streams = Streams {
        stdin: stdin.map_or(Input::Null, Input::Bytes),
        stdout: None,
    };
    run_with(checked, args, env, streams, timeout, cap, leaf).await
}

/// Runs a checked program to completion within `timeout`, keeping at most `cap` bytes of
/// each captured output stream (the rest is read and dropped so the child never blocks on a
/// full pipe). A file in `streams` is the child's own descriptor, so its data never passes
/// through the agent; the returned `stdout` is empty for a file. The program runs in `leaf`;
/// on timeout the whole leaf is killed, and an empty leaf is removed (one a daemon still
/// holds stays until the service's cgroup ends).
pub(crate) async fn run_with(
    checked: &Checked,
    args: &[String],
    env: &[(String, String)],
    streams: Streams,
    timeout: Duration,
    cap: usize,
    mut leaf: Leaf,
) -> Result<Finished, String> {
    let cgroup = leaf.cgroup.clone();
    let result = run_in(checked, args, env, streams, timeout, cap, &mut leaf).await;
    if let Some(cg) = cgroup {
        let timed_out = result.is_err();
        tokio::task::spawn_blocking(move || {
            if timed_out {
                let _ = cg.kill();
            }
            if cg.procs().is_empty() {
                let _ = cg.remove();
            }
        })
        .await
        .ok();
    }
    result
}

async fn run_in(
    checked: &Checked,
    args: &[String],
    env: &[(String, String)],
    streams: Streams,
    timeout: Duration,
    cap: usize,
    leaf: &mut Leaf,
) -> Result<Finished, String> {
    let program = checked.program.display();
    let (mut cmd, _file) = crate::program_user::command(&checked.program, leaf.user)
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let (stdin, data) = match streams.stdin {
        Input::Null => (Stdio::null(), None),
        Input::Bytes(b) => (Stdio::piped(), Some(b)),
        Input::File(f) => (Stdio::from(f), None),
    };
    let stdout = streams.stdout.map_or_else(Stdio::piped, Stdio::from);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&checked.working_dir)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    leaf.attach(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("program {program} not found"),
        _ => format!("cannot run {program}: {e}"),
    })?;
    // The agent's copies of the stream files are not needed once the child has its own.
    drop(cmd);
    let input = child.stdin.take();
    let out = child.stdout.take();
    let err = child.stderr.take().expect("piped");
    let work = async {
        let feed = async {
            if let (Some(mut pipe), Some(data)) = (input, data) {
                // A program that exits without reading its input is not an error.
                let _ = pipe.write_all(data.as_bytes()).await;
            }
        };
        let read_out = async {
            match out {
                Some(out) => read_capped(out, cap).await,
                None => (String::new(), false),
            }
        };
        let ((), (stdout, t1), (stderr, t2), status) =
            tokio::join!(feed, read_out, read_capped(err, cap), child.wait());
        let status = status.map_err(|e| format!("waiting for {program}: {e}"))?;
        Ok::<_, String>(Finished {
            exit_code: status.code(),
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        // Dropping the future drops the child, which kill_on_drop kills.
        Err(_) => Err(format!(
            "program {program} timed out after {} ms",
            timeout.as_millis()
        )),
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}
