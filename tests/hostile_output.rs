//! What a hostile plugin says, through the real binary: secrets it prints plainly or encoded
//! reach no log, event, journal row or CLI output; a 20 MiB error and a report over the frame
//! limit fail their launch promptly while the agent stays connected; a million log records
//! leave the agent log small; a CM report carrying its credential shows it masked.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use common::{Stratus, alive, every_file, hello_deployment, read, server_root, servers, terminate};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The hello deployment whose single app server runs `package` told to `attack`.
fn hostile_app(name: &str, package: &Path, attack: &str) -> String {
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let text = hello_deployment(name, 1);
    let (head, app) = text.split_once("[services.app]").unwrap();
    let app = app
        .replacen(
            &format!("package = \"{}\"", hello.display()),
            &format!("package = \"{}\"", package.display()),
            1,
        )
        .replace(
            "settings = { greeting = \"application\" }",
            &format!("settings = {{ attack = \"{attack}\" }}"),
        );
    format!("{head}[services.app]{app}")
}

/// A copy of the hostile package in `dir` whose manifest has these limits instead.
fn hostile_with(dir: &Path, timeout_ms: u64, output_bytes: u64) -> PathBuf {
    let from = stratus_plugin_artifacts::package_dir("hostile");
    let to = dir.join("hostile-copy");
    std::fs::create_dir_all(&to).unwrap();
    for f in every_file(&from) {
        let rel = f.strip_prefix(&from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, to.join(rel)).unwrap();
    }
    let manifest = read(&to.join("plugin.toml"))
        .replace("timeout-ms = 2000", &format!("timeout-ms = {timeout_ms}"))
        .replace(
            "output-bytes = 65536",
            &format!("output-bytes = {output_bytes}"),
        );
    assert!(manifest.contains(&format!("timeout-ms = {timeout_ms}")));
    std::fs::write(to.join("plugin.toml"), manifest).unwrap();
    to
}

fn launch(st: &Stratus, name: &str, text: &str) -> (Output, Duration) {
    let file = st.write_file(&format!("{name}.toml"), text);
    let started = Instant::now();
    let out = st.run(&["launch", file.to_str().unwrap()]);
    (out, started.elapsed())
}

/// The start of a long output, for an assertion message.
fn head(text: &str) -> String {
    text.chars().take(4000).collect()
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every text value of every row of every table of the journal (the SQLite store).
fn journal(st: &Stratus) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        st.dir().join("stratus.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let text = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    _ => continue,
                };
                out.push((format!("journal table {t}"), text));
            }
        }
    }
    out
}

/// A secret as the hostile plugin prints it: plain, hex, percent-encoded and the base64
/// characters that carry only the secret's bits at each of the three byte alignments.
fn forms(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let pct: String = b.iter().map(|x| format!("%{x:02X}")).collect();
    let mut out = vec![
        secret.to_string(),
        hex.to_uppercase(),
        hex,
        pct.to_lowercase(),
        pct,
    ];
    // Disguised as the hostile plugin disguises them (see its `disguised`).
    let mixed: String = b
        .iter()
        .enumerate()
        .map(|(i, x)| match i % 2 {
            0 => format!("%{x:02x}"),
            _ => format!("%{x:02X}"),
        })
        .collect();
    let (head, tail) = secret.split_at(secret.len() / 2);
    out.extend([
        secret.to_uppercase(),
        secret.chars().rev().collect(),
        mixed,
        format!("{head}\u{200b}{tail}"),
        format!("{head}\u{1b}[0m{tail}"),
    ]);
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(b);
        let (start, end) = ((8 * offset).div_ceil(6), 8 * padded.len() / 6);
        for e in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            out.push(e.encode(&padded)[start..end].to_string());
        }
    }
    out
}

/// Every CLI view of the state directory an operator could print.
fn cli_views(st: &Stratus) -> Vec<(String, String)> {
    let mut views = vec![
        vec!["status".to_string()],
        vec!["status".into(), "--output".into(), "json".into()],
        vec!["events".into()],
        vec!["logs".into()],
    ];
    for c in [
        "scaling-worker",
        "configuration-worker",
        "monitor-server",
        "monitor-deployment",
        "monitor-scaling-event",
        "dispatcher",
    ] {
        views.push(vec!["logs".into(), c.into()]);
    }
    let status = st.status();
    for d in status["deployments"].as_array().unwrap() {
        for t in d["tiers"].as_array().unwrap() {
            for s in t["servers"].as_array().unwrap() {
                let (dep, id) = (d["name"].as_str().unwrap(), s["id"].as_str().unwrap());
                views.push(vec![
                    "logs".into(),
                    id.into(),
                    "--deployment".into(),
                    dep.into(),
                ]);
            }
        }
    }
    views
        .into_iter()
        .map(|args| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            (format!("stratus {}", args.join(" ")), both(&st.run(&a)))
        })
        .collect()
}

/// Logs and outputs: everything under `logs/`, and each server's agent logs and outputs.
fn log_files(st: &Stratus) -> Vec<(String, String)> {
    let mut files = every_file(&st.dir().join("logs"));
    files.extend(
        every_file(&st.dir().join("servers"))
            .into_iter()
            .filter(|f| {
                let name = f.file_name().unwrap().to_string_lossy();
                name.starts_with("agent.log") || name.ends_with(".out") || name.ends_with(".log")
            }),
    );
    files
        .into_iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            (f.display().to_string(), text)
        })
        .collect()
}

#[test]
fn secrets_printed_plainly_or_encoded_reach_no_log_event_journal_or_cli_output() {
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    for (name, attack) in [
        ("leakplain", "out-secret-plain"),
        ("leakcoded", "out-secret-encoded"),
    ] {
        let st = Stratus::new();
        let (out, _) = launch(&st, name, &hostile_app(name, &hostile, attack));
        let text = both(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        // The attack ran with a secret in hand, and what it said arrived masked.
        assert!(text.contains("leaking: ****"), "{text}");
        let mut seen = vec![(format!("stratus launch {name}"), text)];
        seen.extend(cli_views(&st));
        seen.extend(journal(&st));
        seen.extend(log_files(&st));
        assert!(
            seen.iter()
                .any(|(w, t)| w.contains("configure") && t.contains("[warn] warn ****")),
            "the hook log kept the masked records"
        );
        assert_nothing_leaked(&st, &seen);
        terminate(&st, name);
    }
}

#[test]
fn a_cm_report_carrying_its_credential_reaches_no_output() {
    let st = Stratus::new();
    let adapter = stratus_plugin_artifacts::package_dir("hostile-cm");
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let text = format!(
        "[deployment]\nname = \"cmleak\"\n\n[tiers.web]\nmin = 1\nmax = 1\nservices = [\"web\"]\n\
         launch = {{ cm = {{ adapter = \"hostile-cm\", package = \"{}\" }} }}\n\n\
         [services.web]\npackage = \"{}\"\nports = {{ http = 8080 }}\n",
        adapter.display(),
        hello.display()
    );
    let (out, _) = launch(&st, "cmleak", &text);
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    let mut seen = vec![("stratus launch cmleak".to_string(), text)];
    seen.extend(cli_views(&st));
    seen.extend(journal(&st));
    seen.extend(log_files(&st));
    // The summary arrived, with every form of the credential masked.
    assert!(
        seen.iter().any(|(w, t)| w == "stratus events"
            && t.contains("hostile-cm ran on")
            && t.contains("leaking **** **** ****")),
        "the CM summary reached the events, masked"
    );
    assert_nothing_leaked(&st, &seen);
    terminate(&st, "cmleak");
}

#[test]
fn plugin_text_cannot_forge_hook_log_lines_or_reach_a_terminal() {
    let st = Stratus::new();
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let (out, _) = launch(
        &st,
        "forge",
        &hostile_app("forge", &hostile, "out-forge-log"),
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "an escape reached the terminal: {text:?}"
    );
    // The error's second line stays inside the report of the failure, in launch and status.
    let status = st.ok(&["status"]);
    for out in [&text, &status] {
        assert!(out.contains("failed"), "{out}");
        assert!(!out.lines().any(|l| l.starts_with("# outcome")), "{out}");
    }
    let hooks = every_file(&st.dir().join("logs/hooks/forge"));
    let configure = hooks
        .iter()
        .find(|f| f.to_string_lossy().ends_with("app-1_configure.log"))
        .expect("the configure hook log");
    let log = read(configure);
    // One outcome line, the real one, and it says the hook failed.
    let outcomes: Vec<&str> = log.lines().filter(|l| l.starts_with("# outcome")).collect();
    assert_eq!(outcomes.len(), 1, "{log}");
    assert!(outcomes[0].contains("Failed"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("[info] all good")),
        "{log}"
    );
    assert!(log.contains("| fine"), "the output is kept, quoted: {log}");
    // What plugins said is the operator's to read, not other plugins' programs'.
    use std::os::unix::fs::PermissionsExt;
    let logs = std::fs::metadata(st.dir().join("logs")).unwrap();
    assert_eq!(logs.permissions().mode() & 0o777, 0o700);
    for (what, t) in log_files(&st).into_iter().chain(cli_views(&st)) {
        assert!(!t.contains('\u{1b}'), "an escape sequence in {what}");
    }
    terminate(&st, "forge");
}

/// No form of any generated secret in any of the texts `seen`.
fn assert_nothing_leaked(st: &Stratus, seen: &[(String, String)]) {
    let secrets = common::secrets(st);
    assert!(!secrets.is_empty(), "key management holds the secrets");
    for secret in &secrets {
        for (i, form) in forms(secret).iter().enumerate() {
            assert!(form.len() >= 8, "secrets are long enough to search for");
            for (what, text) in seen {
                // Never print the secret itself: only where, and which encoding.
                assert!(
                    !text.contains(form.as_str()),
                    "a secret leaked into {what} (form {i})"
                );
            }
        }
    }
}

/// The app server of deployment `d`, with the agent still connected and its process alive,
/// and the database it depends on still running.
fn assert_agents_healthy(d: &Value) {
    let app = &servers(d, "app")[0];
    assert_eq!(app["agent"], "RUNNING", "{app}");
    assert!(alive(app["pid"].as_u64().unwrap() as u32));
    assert_eq!(servers(d, "db")[0]["services"][0]["state"], "RUNNING");
}

#[test]
fn a_20_mib_hook_error_fails_the_launch_promptly_with_a_cut_message() {
    let st = Stratus::new();
    // Building three 20 MiB strings can pass the package's 2 s on a loaded machine (seen in
    // CI): the error, not the time limit, is what this test is about.
    let hostile = hostile_with(st.dir(), 30_000, 65536);
    let (out, took) = launch(
        &st,
        "huge",
        &hostile_app("huge", &hostile, "out-huge-error"),
    );
    let text = both(&out);
    assert_eq!(out.status.code(), Some(1), "{}", head(&text));
    assert!(took < Duration::from_secs(90), "took {took:?}");
    assert!(text.contains("hook configure"), "{}", head(&text));
    assert!(
        text.contains("EEEE…(cut, 20971520 bytes)"),
        "the cut is marked: {} bytes, ends {:?}",
        text.len(),
        text.chars().rev().take(300).collect::<String>()
    );
    assert!(text.len() < 1 << 20, "launch printed {} bytes", text.len());

    let d = st.deployment("huge");
    assert_eq!(d["state"], "FAILED");
    assert_agents_healthy(&d);
    let status = st.ok(&["status", "--output", "json"]);
    assert!(status.len() < 1 << 20, "status is {} bytes", status.len());
    for (what, value) in journal(&st) {
        assert!(value.len() < 1 << 20, "{what}: {} bytes", value.len());
    }
    for (what, value) in log_files(&st) {
        assert!(value.len() < 1 << 20, "{what}: {} bytes", value.len());
    }
    terminate(&st, "huge");
}

#[test]
fn a_report_over_the_frame_limit_fails_its_hook_not_the_connection() {
    let st = Stratus::new();
    // 32 MiB of stdout is allowed by this manifest, but cannot travel in one 16 MiB frame.
    let hostile = hostile_with(st.dir(), 60_000, 32 << 20);
    let (out, took) = launch(
        &st,
        "frame",
        &hostile_app("frame", &hostile, "flood-stdout"),
    );
    let text = both(&out);
    let head = head(&text);
    assert_eq!(out.status.code(), Some(1), "{head}");
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(text.contains("output-limit"), "{head}");
    assert!(text.contains("limit of one protocol frame"), "{head}");
    let d = st.deployment("frame");
    assert_eq!(d["state"], "FAILED");
    assert_agents_healthy(&d);
    terminate(&st, "frame");
}

#[test]
fn a_million_log_records_leave_the_agent_log_small() {
    let st = Stratus::new();
    let hostile = hostile_with(st.dir(), 120_000, 65536);
    let (out, _) = launch(
        &st,
        "flood",
        &hostile_app("flood", &hostile, "out-log-flood"),
    );
    assert!(out.status.success(), "{}", both(&out));
    let d = st.deployment("flood");
    assert_eq!(d["state"], "RUNNING");
    let app = &servers(&d, "app")[0];
    let agent_log = server_root(&st, "flood", app).join("agent/agent.log");
    let log = read(&agent_log);
    assert!(log.len() < 1 << 20, "agent.log is {} bytes", log.len());
    assert!(
        log.contains("… 999000 more log records dropped"),
        "the drop is said once"
    );
    assert_eq!(log.matches("hostile flood record").count(), 1000);
    let hooks = every_file(&st.dir().join("logs/hooks/flood"));
    let configure = hooks
        .iter()
        .find(|f| f.to_string_lossy().ends_with("app-1_configure.log"))
        .expect("the configure hook log");
    assert!(read(configure).contains("999000 more log records dropped"));
    terminate(&st, "flood");
}

const PW: &str = "hunter2-but-longer";

/// `stratus plugin call` of the hostile plugin with a context holding `PW` and `settings`.
fn plugin_call(hook: &str, settings: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    let ctx = serde_json::json!({
        "deployment": "d", "tier": "t",
        "server": {"id": "t-1", "name": "d-t-1", "address": "127.0.0.1"},
        "service_id": "1", "service_name": "x", "service_dir": svc,
        "credentials": [{"name": "admin", "user": "root", "password": PW}],
        "settings": settings
    });
    std::fs::write(dir.path().join("ctx.json"), ctx.to_string()).unwrap();
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .current_dir(dir.path())
        .env("STRATUS_STATE_DIR", dir.path().join("state"))
        .args(["plugin", "call", hostile.to_str().unwrap(), hook])
        .args(["--context", "ctx.json"])
        .output()
        .unwrap();
    let text = both(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(PW), "the password was printed");
    text
}

#[test]
fn plugin_call_masks_a_password_in_a_health_message() {
    let text = plugin_call("health-check", serde_json::json!([["health", "leak"]]));
    assert!(text.contains("passwords: ****"), "{text}");
}

#[test]
fn plugin_call_masks_a_password_in_a_file_name() {
    let text = plugin_call(
        "configure",
        serde_json::json!([["attack", "out-secret-file-name"]]),
    );
    assert!(text.contains("/svc/**** ("), "{text}");
}
