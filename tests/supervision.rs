//! Supervision in real launches: a greeter killed from outside is started again by its
//! agent's supervisor and counted in status; a process that exits at once is started again
//! with growing waits and shows as a crash loop with its exit status and the tail of its
//! output (redacted), in status text and JSON, and in one event.

use crate::common;

use common::relaunch::{Launch, Relaunched, launch_of, relaunch};
use common::{Stratus, servers, terminate};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The three-tier example (HAProxy, greeters, MariaDB) with absolute paths.
fn three_tier(st: &Stratus) -> PathBuf {
    let root = stratus_plugin_artifacts::repo_root();
    let dir = root.join("examples/three-tier");
    let text = std::fs::read_to_string(dir.join("deployment.toml")).unwrap();
    let text = text
        .replace(
            "\"../../plugins/",
            &format!("\"{}/plugins/", root.display()),
        )
        .replace(
            "\"datasource.sql\"",
            &format!("\"{}\"", dir.join("datasource.sql").display()),
        );
    st.write_file("shop.toml", &text)
}

/// Every live process whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && common::alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// The greeters of server `server` of deployment `shop`.
fn greeters(st: &Stratus, server: &str) -> Vec<u32> {
    let root = st.dir().join(format!("servers/shop/{server}/"));
    processes_with(&root.to_string_lossy())
        .into_iter()
        .filter(|(_, c)| c.contains("greeter"))
        .map(|(p, _)| p)
        .collect()
}

/// The first crashed process of the first service of the first server of `tier`, if any.
fn process_of(d: &Value, tier: &str) -> Value {
    servers(d, tier)[0]["services"][0]["processes"][0].clone()
}

/// Polls `deployment` until `done` holds, for up to `limit`; returns the last view.
fn wait_for(st: &Stratus, dep: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut d = st.deployment(dep);
    while !done(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        d = st.deployment(dep);
    }
    d
}

#[test]
fn a_killed_greeter_is_started_again_by_its_supervisor_and_counted() {
    let st = Stratus::new();
    let file = three_tier(&st);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("shop");
    assert_eq!(d["state"], "RUNNING", "{d}");
    assert!(process_of(&d, "app").is_null(), "nothing crashed yet: {d}");
    let before = greeters(&st, "app-1");
    assert_eq!(before.len(), 1, "{before:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let d = wait_for(&st, "shop", Duration::from_secs(20), |d| {
        process_of(d, "app")["state"] == "RUNNING"
    });
    let p = process_of(&d, "app");
    assert_eq!(p["name"], "greeter", "{d}");
    assert_eq!(p["state"], "RUNNING", "{d}");
    assert_eq!(p["restarts"], 1, "{d}");
    assert_eq!(p["last_exit"], "killed by signal 9 (SIGKILL)", "{d}");
    assert_eq!(p["crash_loop"], false, "{d}");
    let after = greeters(&st, "app-1");
    assert_eq!(after.len(), 1, "one greeter again, not two: {after:?}");
    assert_ne!(after[0], before[0]);
    assert_eq!(p["pid"], after[0], "{d}");
    // The other app server's greeter was left alone.
    assert!(process_of(&d, "app").is_object());
    assert!(
        servers(&d, "app")[1]["services"][0]["processes"].is_null(),
        "{d}"
    );

    let text = st.ok(&["status", "shop"]);
    assert!(
        text.contains("process app/greeter RUNNING: restarts 1, last killed by signal 9 (SIGKILL)"),
        "{text}"
    );
    let events = st.ok(&["events", "--deployment", "shop"]);
    assert!(
        events.contains(
            "process greeter of app on app-1 started again by its supervisor (1 restart(s)"
        ),
        "{events}"
    );
    // The restarted greeter serves: the load balancer answers through it.
    let lb = servers(&d, "lb")[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let body = http_get(&format!("{lb}:8000"));
    assert!(body.contains("200"), "{body}");
    let pids = terminate(&st, "shop");
    assert!(!pids.is_empty());
    assert!(
        greeters(&st, "app-1").is_empty(),
        "no greeter outlives terminate"
    );
}

/// The status line and body of `GET /` at `addr`, with a short timeout.
fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The hostile package allowed `/bin/sh`, with one service `crash` whose configure spawns a
/// process that prints a password and a fatal error, then exits 3.
fn crashing_deployment(st: &Stratus) -> PathBuf {
    let pkg = common::package_copy(st, "pkg", "hostile", |_| {
        "[plugin]\nname = \"hostile\"\nversion = \"0.1.0\"\nworld = \"service\"\n\n\
         [capabilities]\nmemory-mb = 64\ntimeout-ms = 10000\nprograms = [\"/bin/sh\"]\n\
         dirs = [ { dir = \"service\", access = \"read-write\" } ]\n"
            .to_string()
    });
    let text = format!(
        "[deployment]\nname = \"crash\"\n\n[tiers.h]\nmin = 1\nmax = 1\nservices = [\"h\"]\n\n\
         [services.h]\npackage = \"{}\"\ncredentials = [\"admin\"]\n\
         settings = {{ attack = \"proc-crash\" }}\n",
        pkg.display()
    );
    st.write_file("crash.toml", &text)
}

#[test]
fn a_process_that_exits_at_once_waits_longer_each_time_and_shows_as_a_crash_loop() {
    let st = Stratus::new();
    let file = crashing_deployment(&st);
    st.ok(&["launch", file.to_str().unwrap()]);
    // Each wait the agent announces (the time from an exit to the next start), as its log has
    // them: sampling the status could miss the first, a second long, on a loaded machine.
    let d = st.deployment("crash");
    let log = common::server_root(&st, "crash", &servers(&d, "h")[0]).join("agent/agent.log");
    let logged = || -> Vec<i64> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("supervised process crashed"))
            .filter_map(|l| {
                let digits = l.split("wait_ms=").nth(1)?;
                let end = digits
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(digits.len());
                digits[..end].parse().ok()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let waits = logged();
    assert_eq!(
        waits.get(..4),
        Some(&[1000, 2000, 4000, 8000][..]),
        "{waits:?}"
    );
    // The status shows a crash loop and the wait under way, one the agent announced.
    let shown = |p: &Value| {
        p["next_start_at_ms"]
            .as_i64()
            .zip(p["last_exit_at_ms"].as_i64())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut d = st.deployment("crash");
    while Instant::now() < deadline {
        let p = process_of(&d, "h");
        if p["crash_loop"] == true && shown(&p).is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        d = st.deployment("crash");
    }
    let p = process_of(&d, "h");
    let (next, exit) = shown(&p).unwrap_or_else(|| panic!("{d}"));
    assert!(logged().contains(&(next - exit)), "{d}");
    assert_eq!(p["name"], "crash", "{d}");
    assert_eq!(p["crash_loop"], true, "{d}");
    assert_eq!(p["state"], "CRASH-LOOP", "{d}");
    assert!(p["restarts"].as_u64().unwrap() >= 3, "{d}");
    assert!(p["quick_exits_in_a_row"].as_u64().unwrap() >= 4, "{d}");
    assert_eq!(p["last_exit"], "exit code 3", "{d}");
    let tail = p["output_tail"].as_str().unwrap();
    assert!(tail.contains("fatal: no configuration"), "{tail}");
    assert!(tail.contains("starting with password ****"), "{tail}");

    // Backoff, not a spin: each start printed one line, and there were no more starts than
    // restarts plus the first.
    let restarts = p["restarts"].as_u64().unwrap();
    let log =
        common::server_root(&st, "crash", &servers(&d, "h")[0]).join("agent/processes/h/crash.log");
    let starts = common::read(&log).matches("starting with").count() as u64;
    assert!(
        starts <= restarts + 2,
        "{starts} starts for {restarts} restarts"
    );

    let text = st.ok(&["status", "crash"]);
    assert!(
        text.contains("process h/crash CRASH-LOOP: restarts "),
        "{text}"
    );
    assert!(text.contains("        | fatal: no configuration"), "{text}");
    let events = st.ok(&["events", "--deployment", "crash"]);
    assert_eq!(
        events
            .matches("process crash of h on h-1 is in a crash loop")
            .count(),
        1,
        "{events}"
    );
    // The process writes its own log unredacted, like any program; everything Stratus
    // reports or stores of it is redacted.
    common::assert_no_secret_leaked(&st, |f| !f.to_string_lossy().contains("agent/processes/"));
    terminate(&st, "crash");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        processes_with("starting with password").is_empty(),
        "nothing starts it again after terminate"
    );
}

/// Adoption across an agent restart is not built (see docs/operating.md, "Supervision"):
/// today an agent that dies leaves its processes running, its server is LOST and replaced,
/// and the replacement ends them with the old server's cgroup. This pins down that nothing
/// is orphaned and nothing runs twice meanwhile.
#[test]
fn a_killed_agent_leaves_no_orphan_once_its_server_is_replaced() {
    let st = Stratus::new();
    let file = three_tier(&st);
    let text =
        common::read(&file).replace("[tiers.app]\n", "[tiers.app]\nrecovery-grace = \"1s\"\n");
    std::fs::write(&file, text).unwrap();
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("shop");
    let agent = servers(&d, "app")[0]["pid"].as_u64().unwrap() as u32;
    let greeter = greeters(&st, "app-1");
    assert_eq!(greeter.len(), 1, "{greeter:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &agent.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(common::wait_gone(agent, Duration::from_secs(5)));
    // The agent's children outlive it: they are in the server's cgroup, not its pipes.
    assert!(common::alive(greeter[0]), "the greeter died with its agent");
    assert_eq!(
        greeters(&st, "app-1").len(),
        1,
        "and nothing started a second one"
    );

    let replaced = |d: &Value| {
        d["state"] == "RUNNING"
            && servers(d, "app")
                .iter()
                .all(|s| s["id"] != "app-1" && s["agent"] == "RUNNING")
    };
    let d = wait_for(&st, "shop", Duration::from_secs(60), replaced);
    assert!(replaced(&d), "{d}");
    assert!(
        common::wait_gone(greeter[0], Duration::from_secs(10)),
        "the old greeter outlived its replaced server"
    );
    let ids: Vec<String> = servers(&d, "app")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert_eq!(greeters(&st, id).len(), 1, "one greeter on {id}");
    }
    terminate(&st, "shop");
}

/// The pids of live processes whose command line mentions both `a` and `b`.
fn pids_with(a: &str, b: &str) -> Vec<u32> {
    let mut p: Vec<u32> = processes_with(a)
        .into_iter()
        .filter(|(_, c)| c.contains(b))
        .map(|(p, _)| p)
        .collect();
    p.sort();
    p
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn agents_killed_and_started_again_adopt_their_processes() {
    let st = Stratus::new();
    let file = three_tier(&st);
    let health = "health = { interval = \"1s\", timeout = \"1s\", unhealthy-after = 3 }";
    // The agents are started again by hand: recovery must not replace their servers meanwhile.
    let text = common::read(&file)
        .replace("ports = {", &format!("{health}\nports = {{"))
        .replace("min = 1\n", "min = 1\nrecovery = \"off\"\n")
        .replace("min = 2\n", "min = 2\nrecovery = \"off\"\n");
    std::fs::write(&file, text).unwrap();
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("shop");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let root = |id: &str| {
        st.dir()
            .join(format!("servers/shop/{id}/"))
            .display()
            .to_string()
    };
    let processes = || {
        (
            pids_with(&root("db-1"), "mariadbd"),
            pids_with(&root("lb-1"), "haproxy"),
            greeters(&st, "app-1"),
        )
    };
    let before = processes();
    assert_eq!(
        (before.0.len(), before.1.len(), before.2.len()),
        (1, 1, 1),
        "{before:?}"
    );

    // The agents of db-1, lb-1 and app-1 are killed alone (their children stay) and started
    // again.
    let agents: Vec<(String, u32)> = ["db", "lb", "app"]
        .iter()
        .map(|t| {
            let s = &servers(&d, t)[0];
            let id = s["id"].as_str().unwrap().to_string();
            (id, s["pid"].as_u64().unwrap() as u32)
        })
        .collect();
    let launches: Vec<Launch> = agents.iter().map(|(_, p)| launch_of(*p)).collect();
    for (_, pid) in &agents {
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert!(common::wait_gone(*pid, Duration::from_secs(5)));
    }
    assert_eq!(processes(), before, "the processes outlive their agents");
    let restarted_at = now_ms();
    let _agents: Vec<Relaunched> = launches.iter().map(relaunch).collect();

    // Back, with fresh health results all OK: mariadb's and haproxy's checks find their
    // daemons through the new agents' supervisors.
    let fresh_ok = |d: &Value| {
        agents.iter().all(|(id, old)| {
            let tier = id.rsplit_once('-').unwrap().0;
            let s = servers(d, tier)
                .into_iter()
                .find(|s| s["id"] == *id.as_str());
            s.is_some_and(|s| {
                s["agent"] == "RUNNING"
                    && s["pid"] != *old
                    && s["services"][0]["health"]["status"] == "OK"
                    && s["services"][0]["health"]["checked_at_ms"]
                        .as_i64()
                        .is_some_and(|t| t > restarted_at + 1000)
            })
        })
    };
    let d = wait_for(&st, "shop", Duration::from_secs(40), fresh_ok);
    assert!(fresh_ok(&d), "{d}");
    assert_eq!(
        processes(),
        before,
        "the same processes, adopted: none started twice"
    );
    for tier in ["db", "lb", "app"] {
        let s = &servers(&d, tier)[0];
        assert!(
            s["services"][0]["processes"].is_null(),
            "nothing restarted: {s}"
        );
    }

    // The new app-1 agent supervises its adopted greeter: killed, it is started again.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &before.2[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let d = wait_for(&st, "shop", Duration::from_secs(20), |d| {
        process_of(d, "app")["state"] == "RUNNING"
    });
    let p = process_of(&d, "app");
    assert_eq!(p["name"], "greeter", "{d}");
    assert_eq!(p["restarts"], 1, "{d}");
    assert_eq!(p["last_exit"], "ended, status unknown", "{d}");
    assert_eq!(greeters(&st, "app-1").len(), 1);

    terminate(&st, "shop");
    let everything = st.dir().display().to_string();
    assert!(pids_with(&everything, "mariadbd").is_empty());
    assert!(pids_with(&everything, "haproxy").is_empty());
    assert!(pids_with(&everything, "greeter").is_empty());
}
