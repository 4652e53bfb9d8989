//! The agent log of a server on another machine (the SSH provider's lab hosts,
//! `tests/common/lab.rs`): `stratus logs SERVER` and the HTTP API get it from the server's
//! connected agent through the control plane, and say clearly when that agent is not
//! connected.

use crate::common;

use common::lab::Lab;
use common::{Stratus, servers};
use serde_json::Value;
use std::time::Duration;

/// The key management name of the lab's client key here.
const LAB_KEY: &str = "lab-client";

/// The hello example with its app tier on `[providers.lab]` (every lab address), not
/// recovered, so a server whose agent dies stays LOST.
fn hello_on_lab(lab: &Lab) -> String {
    let table = lab.provider_table(LAB_KEY, "");
    common::hello_on("far", "lab", &table).replace(
        "[tiers.app]\n",
        "[tiers.app]\nrecovery = \"off\"\nrecovery-grace = \"1s\"\n",
    )
}

/// A control plane on the lab's bridge, where the hosts' agents dial it; shut down on drop.
struct Served<'a> {
    st: &'a Stratus,
    child: Option<std::process::Child>,
}

impl<'a> Served<'a> {
    fn start(st: &'a Stratus, lab: &Lab) -> Served<'a> {
        let listen = format!("{}:0", lab.control_address());
        let child = common::serve::serve(st, &["--listen", &listen]);
        Served {
            st,
            child: Some(child),
        }
    }
}

impl Drop for Served<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            common::serve::stop(self.st, child);
        }
    }
}

/// The HTTP API's answer (status, body) to `GET path` with the operator token.
fn http_get(st: &Stratus, path: &str) -> (u16, String) {
    let control: Value =
        serde_json::from_str(&common::read(&st.dir().join("control.json"))).unwrap();
    let base = control["http"].as_str().expect("an HTTP address");
    let token = common::read(&st.dir().join("keys/operator-token"));
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(format!("http://{base}{path}"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// The agent log of the app server on its lab host, as that host's own `cat` reads it.
fn log_on_host(lab: &Lab, host: usize, server: &str) -> String {
    let path = format!(
        "{}/servers/far/{server}/agent/agent.log",
        lab.remote_dir().display()
    );
    let out = lab.run(host, &["cat", &path]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// hello with its app server on a lab host: `stratus logs app-1` prints that server's agent
/// log (its handshake, exactly the lines on its host), which is nowhere on the control plane's
/// disk; the HTTP API returns the same; once its agent is killed, both say it is not
/// connected (LOST) and that its log is on its host.
#[test]
fn the_agent_log_of_a_server_on_another_host_is_read_through_its_agent() {
    let lab = Lab::new(2, 1);
    let st = Stratus::new();
    lab.keep_client_key(st.dir(), LAB_KEY).unwrap();
    let served = Served::start(&st, &lab);
    let file = st.write_file("far.toml", &hello_on_lab(&lab));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("far");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = &servers(&d, "app")[0];
    let server = app["id"].as_str().unwrap().to_string();
    let host = lab.host_of(app["address"].as_str().unwrap()).unwrap();

    let listed = st.ok(&["logs"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&server) && l.contains("on its host")),
        "{listed}"
    );
    let printed = st.ok(&["logs", &server]);
    assert!(printed.contains("handshake accepted"), "{printed}");
    // Written by the agent on its host, and read from there: no copy on this side.
    let there = log_on_host(&lab, host, &server);
    assert!(
        !printed.is_empty() && there.starts_with(&printed),
        "{printed}\n---\n{there}"
    );
    let here: Vec<_> = common::every_file(st.dir())
        .into_iter()
        .filter(|f| f.ends_with("agent.log") && f.to_string_lossy().contains(&server))
        .collect();
    assert!(here.is_empty(), "{here:?}");

    let path = format!("/v1/deployments/far/servers/{server}/logs?log=agent");
    let (status, body) = http_get(&st, &path);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("handshake accepted"), "{body}");
    assert!(log_on_host(&lab, host, &server).starts_with(&body));

    kill_agent(&lab, host, &server);
    common::wait_for(&st, "far", Duration::from_secs(30), |d| {
        servers(d, "app")[0]["agent"] == "LOST"
    });
    let out = st.run(&["logs", &server]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let expected = format!("agent of {server} is not connected (LOST); its log is on its host");
    assert!(err.contains(&expected), "{err}");
    let (status, body) = http_get(&st, &path);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains(&expected), "{body}");

    common::terminate(&st, "far");
    drop(served);
}

/// Kills the agent of `server` on lab host `host` (the process the lab started for the test).
fn kill_agent(lab: &Lab, host: usize, server: &str) {
    let dir = format!("{}/servers/far/{server}", lab.remote_dir().display());
    let agents: Vec<u32> = lab
        .processes(host)
        .into_iter()
        .filter(|(_, c)| c.contains(" agent ") && c.contains(&dir))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(agents.len(), 1, "{:?}", lab.processes(host));
    let out = lab.run(host, &["kill", "-9", &agents[0].to_string()]);
    assert!(out.status.success(), "{out:?}");
}
