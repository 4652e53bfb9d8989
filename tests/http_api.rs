//! The HTTP API on a real `stratus serve`, through reqwest: 401 without the token, the list
//! beside a CLI launch, launch/scale/terminate through the API while following its events
//! (resumed with `Last-Event-ID` without gap or duplicate), a broken file's line and column,
//! uploads (and hostile ones), logs, the checked-in OpenAPI document, and the TLS rule.

use crate::common;

use common::{Stratus, alive, hello_deployment, servers, wait_gone};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A control plane started with `stratus serve`, its HTTP address and operator token.
struct Api {
    st: Option<Stratus>,
    child: Child,
    base: String,
    token: String,
    client: Client,
}

impl Api {
    fn start() -> Api {
        let st = Stratus::new();
        let child = st
            .cmd()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stratus serve");
        let control = st.dir().join("control.json");
        let start = Instant::now();
        let http = loop {
            let info: Option<Value> = std::fs::read_to_string(&control)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(addr) = info.as_ref().and_then(|i| i["http"].as_str()) {
                break addr.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no HTTP address");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            http.starts_with("127.0.0.1:"),
            "loopback by default: {http}"
        );
        let token = std::fs::read_to_string(st.dir().join("keys/operator-token")).unwrap();
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Api {
            st: Some(st),
            child,
            base: format!("http://{http}"),
            token: token.trim().to_string(),
            client,
        }
    }

    fn st(&self) -> &Stratus {
        self.st.as_ref().unwrap()
    }

    fn authed(&self, b: RequestBuilder) -> RequestBuilder {
        b.bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> Response {
        self.authed(self.client.get(format!("{}{path}", self.base)))
            .send()
            .unwrap()
    }

    fn post_json(&self, path: &str, body: &Value) -> Response {
        self.authed(self.client.post(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .unwrap()
    }

    fn deployment(&self, name: &str) -> Value {
        let r = self.get(&format!("/v1/deployments/{name}"));
        assert_eq!(r.status(), StatusCode::OK);
        r.json().unwrap()
    }

    /// Polls the API until `done` holds for deployment `name`.
    fn wait_for(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let d = self.deployment(name);
            if done(&d) {
                return d;
            }
            assert!(start.elapsed() < limit, "timed out; last seen: {d}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An open SSE stream of `/v1/events`, after `last_id` when given.
    fn events(&self, query: &str, last_id: Option<i64>) -> Sse {
        let mut b = self
            .authed(self.client.get(format!("{}/v1/events{query}", self.base)))
            .timeout(Duration::from_secs(300));
        if let Some(id) = last_id {
            b = b.header("Last-Event-ID", id.to_string());
        }
        let r = b.send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Sse {
            lines: BufReader::new(r),
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        // The harness's guard shuts the control plane down and ends every agent first.
        drop(self.st.take());
        let pid = self.child.id();
        if !wait_gone(pid, Duration::from_secs(5)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A Server-Sent Events reader.
struct Sse {
    lines: BufReader<Response>,
}

impl Sse {
    /// The next event's id and data (keep-alive comments skipped).
    fn next(&mut self) -> (i64, Value) {
        let (mut id, mut data, mut kind) = (None, None, None);
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).expect("SSE stream");
            assert!(n > 0, "the SSE stream ended");
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let (Some(id), Some(data)) = (id, data.take()) {
                    assert_eq!(kind.as_deref(), Some("event"));
                    return (id, data);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse::<i64>().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
            }
        }
    }
}

fn assert_problem(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().unwrap();
    assert_eq!(p["status"], status.as_u16(), "{p}");
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:stratus:problem:")
    );
    assert!(!p["detail"].as_str().unwrap().is_empty(), "{p}");
    p
}

#[test]
fn requests_without_the_token_get_401_and_the_list_shows_a_cli_launch() {
    let api = Api::start();
    use std::os::unix::fs::PermissionsExt;
    let token_file = api.st().dir().join("keys/operator-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(api.token.len(), 64, "hex token");

    for path in [
        "/v1/deployments",
        "/v1/events",
        "/v1/openapi.json",
        "/v1/nosuch",
    ] {
        let url = format!("{}{path}", api.base);
        let none = api.client.get(&url).send().unwrap();
        let p = assert_problem(none, StatusCode::UNAUTHORIZED);
        assert!(!p.to_string().contains(&api.token));
        let wrong = api
            .client
            .get(&url)
            .bearer_auth("0".repeat(64))
            .send()
            .unwrap();
        assert_problem(wrong, StatusCode::UNAUTHORIZED);
    }
    let post = api.client.post(format!("{}/v1/deployments", api.base));
    assert_problem(
        post.json(&json!({"file": "/x"})).send().unwrap(),
        StatusCode::UNAUTHORIZED,
    );

    let list: Value = api.get("/v1/deployments").json().unwrap();
    assert_eq!(list, json!({"deployments": []}));
    assert_problem(api.get("/v1/deployments/nosuch"), StatusCode::NOT_FOUND);
    assert_problem(api.get("/v1/nosuch"), StatusCode::NOT_FOUND);

    // The CLI finds the control plane `stratus serve` started, unchanged.
    let file = api
        .st()
        .write_file("hello.toml", &hello_deployment("hello", 2));
    api.st().ok(&["launch", file.to_str().unwrap()]);
    let list: Value = api.get("/v1/deployments").json().unwrap();
    let cli = api.st().deployment("hello");
    let via_api = &list["deployments"][0];
    assert_eq!(via_api["name"], "hello");
    assert_eq!(via_api["state"], "RUNNING");
    for key in ["name", "state", "endpoints"] {
        assert_eq!(via_api[key], cli[key], "{key}");
    }
    let tier = |d: &Value| {
        d["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].clone(),
                    t["target"].clone(),
                    servers(d, t["name"].as_str().unwrap()).len(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(tier(via_api), tier(&cli));
    assert_eq!(api.deployment("hello")["name"], "hello");
    common::terminate(api.st(), "hello");
}

#[test]
fn launch_follow_events_scale_and_terminate_through_the_api() {
    let api = Api::start();
    let file = api.st().write_file("web.toml", &hello_deployment("web", 2));
    let r = api.post_json("/v1/deployments", &json!({"file": file}));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: Value = r.json().unwrap();
    assert_eq!(accepted["name"], "web");

    // Follow the events until the deployment is RUNNING.
    let mut first = api.events("?deployment=web", None);
    let mut seen = Vec::new();
    loop {
        let (id, data) = first.next();
        assert_eq!(data["id"], id);
        assert_eq!(data["deployment"], "web", "{data}");
        seen.push(id);
        if data["message"] == "deployment RUNNING" {
            break;
        }
    }
    drop(first);
    assert!(seen.len() > 10, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert_eq!(api.deployment("web")["state"], "RUNNING");

    // Reconnect after an event in the middle: the rest come again, once each, no gap.
    let cut = seen.len() / 2;
    let mut resumed = api.events("?deployment=web", Some(seen[cut]));
    let again: Vec<i64> = (cut + 1..seen.len()).map(|_| resumed.next().0).collect();
    assert_eq!(again, seen[cut + 1..]);

    // Scale app 2 -> 3; the resumed stream carries on with the scaling events.
    let r = api.post_json("/v1/deployments/web/tiers/app/scale", &json!({"count": 3}));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let scaled: Value = r.json().unwrap();
    assert_eq!(scaled["old"]["count"], 2, "{scaled}");
    assert_eq!(scaled["new"]["count"], 3, "{scaled}");
    let (next_id, _) = resumed.next();
    assert!(next_id > *seen.last().unwrap());
    let d = api.wait_for("web", Duration::from_secs(120), |d| {
        let app = servers(d, "app");
        d["state"] == "RUNNING"
            && app.len() == 3
            && app
                .iter()
                .all(|s| s["agent"] == "RUNNING" && s["services"][0]["state"] == "RUNNING")
    });
    drop(resumed);

    let bounds = api.post_json("/v1/deployments/web/tiers/app/scale", &json!({"count": 99}));
    let p = assert_problem(bounds, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"].as_str().unwrap().contains("outside its bounds"),
        "{p}"
    );
    let tier = api.post_json(
        "/v1/deployments/web/tiers/nosuch/scale",
        &json!({"count": 1}),
    );
    assert_problem(tier, StatusCode::NOT_FOUND);
    let junk = api.post_json(
        "/v1/deployments/web/tiers/app/scale",
        &json!({"count": "x"}),
    );
    assert_problem(junk, StatusCode::BAD_REQUEST);

    // A server's logs.
    let app1 = servers(&d, "app")[0]["id"].as_str().unwrap().to_string();
    let logs = |q: &str| api.get(&format!("/v1/deployments/web/servers/{app1}/logs{q}"));
    let agent = logs("?log=agent").text().unwrap();
    assert!(!agent.is_empty());
    let hooks = logs("?log=hooks").text().unwrap();
    assert!(hooks.contains(&format!("on {app1}")), "{hooks}");
    let tail = logs("?log=hooks&tail=2").text().unwrap();
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert_problem(
        api.get("/v1/deployments/web/servers/nosuch/logs"),
        StatusCode::NOT_FOUND,
    );
    assert_problem(logs("?log=passwd"), StatusCode::BAD_REQUEST);

    // Terminate through the API.
    let pids = api.st().agent_pids();
    let r = api
        .authed(
            api.client
                .delete(format!("{}/v1/deployments/web", api.base)),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.wait_for("web", Duration::from_secs(120), |d| {
        d["state"] == "TERMINATED"
    });
    for p in pids {
        assert!(
            wait_gone(p, Duration::from_secs(10)),
            "agent {p} left running"
        );
    }
    let again = api
        .authed(
            api.client
                .delete(format!("{}/v1/deployments/web", api.base)),
        )
        .send()
        .unwrap();
    assert_problem(again, StatusCode::CONFLICT);

    // Every mutation was logged with its caller; no secret reached the logs or events.
    let log = std::fs::read_to_string(api.st().dir().join("logs/dispatcher.log")).unwrap();
    for what in [
        "POST /v1/deployments ",
        "POST /v1/deployments/web/tiers/app/scale",
        "DELETE /v1/deployments/web",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(what) && l.contains("by the operator token from 127.0.0.1:")),
            "{what} not logged:\n{log}"
        );
    }
    common::assert_no_secret_leaked(api.st(), |_| true);
}

#[test]
fn a_broken_deployment_file_is_a_problem_with_its_line_and_column() {
    let api = Api::start();
    let text = "[deployment]\nname = \"broken\"\n\n[tiers.app]\nmin = \"two\"\n";
    let file = api.st().write_file("broken.toml", text);
    let r = api.post_json("/v1/deployments", &json!({"file": file}));
    let p = assert_problem(r, StatusCode::BAD_REQUEST);
    assert_eq!(p["type"], "urn:stratus:problem:invalid-file");
    let errors = p["errors"].as_array().unwrap();
    let min = errors
        .iter()
        .find(|e| e["line"] == 5)
        .unwrap_or_else(|| panic!("no error on line 5: {p}"));
    assert_eq!(min["file"], file.to_str().unwrap());
    assert_eq!(min["column"], 7, "{p}");
    assert!(!min["message"].as_str().unwrap().is_empty());
    let list: Value = api.get("/v1/deployments").json().unwrap();
    assert_eq!(list, json!({"deployments": []}), "nothing recorded");

    let relative = api.post_json("/v1/deployments", &json!({"file": "broken.toml"}));
    assert_problem(relative, StatusCode::BAD_REQUEST);
    let missing = api.post_json("/v1/deployments", &json!({"file": "/nonexistent/d.toml"}));
    assert_problem(missing, StatusCode::BAD_REQUEST);
    // A path is the caller's choice: a FIFO or a device is refused at once (never waited on,
    // never read without end), and a file not every user may read is not read at all, so its
    // text never comes back in an error.
    use std::os::unix::fs::PermissionsExt;
    let fifo = api.st().dir().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let secret = api
        .st()
        .write_file("secret.toml", "[deployment]\nname = \"S3cretPW\"\nx = 1\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (path, why) in [
        (fifo.to_str().unwrap(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (secret.to_str().unwrap(), "not readable by every user"),
    ] {
        let r = api.post_json("/v1/deployments", &json!({"file": path}));
        let p = assert_problem(r, StatusCode::BAD_REQUEST);
        let text = p.to_string();
        assert!(
            text.contains(why) && !text.contains("S3cretPW"),
            "{path}: {p}"
        );
    }
    // Nor may a world-readable file name what not every user may read: the control plane
    // (root) would upload it and hand it to a plugin, whose error or output could return it.
    let shadow_ds = hello_deployment("leak", 1).replace(
        &stratus_plugin_artifacts::repo_root()
            .join("examples/hello/datasource.sql")
            .display()
            .to_string(),
        "/etc/shadow",
    );
    assert!(
        shadow_ds.contains("/etc/shadow"),
        "the example has a data source"
    );
    let leak = api.st().write_file("leak.toml", &shadow_ds);
    std::fs::set_permissions(&leak, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = api.post_json("/v1/deployments", &json!({"file": leak}));
    let p = assert_problem(r, StatusCode::BAD_REQUEST);
    let text = p.to_string();
    assert!(
        text.contains("/etc/shadow is not readable by every user"),
        "{p}"
    );
    let list: Value = api.get("/v1/deployments").json().unwrap();
    assert_eq!(list, json!({"deployments": []}), "nothing recorded");
    assert!(
        api.get("/v1/deployments").status().is_success(),
        "the API still answers"
    );
    let text = api
        .authed(api.client.post(format!("{}/v1/deployments", api.base)))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_problem(text, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// A tar.gz of `files` (name, bytes), as a client would upload it.
fn targz(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Every file under `dir`, named `prefix/relative`.
fn files_of(dir: &std::path::Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    common::every_file(dir)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(dir).unwrap().display().to_string();
            (format!("{prefix}/{rel}"), std::fs::read(&f).unwrap())
        })
        .collect()
}

fn upload(api: &Api, body: Vec<u8>) -> Response {
    api.authed(api.client.post(format!("{}/v1/deployments", api.base)))
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .unwrap()
}

#[test]
fn an_uploaded_archive_launches_and_hostile_archives_are_refused() {
    let api = Api::start();
    let root = stratus_plugin_artifacts::repo_root();
    let spec = std::fs::read_to_string(root.join("examples/hello/deployment.toml"))
        .unwrap()
        .replace("name = \"hello\"", "name = \"up\"")
        .replace("../../plugins/hello-proxy", "packages/hello-proxy")
        .replace("../../plugins/hello", "packages/hello");
    let mut files = vec![
        ("deployment.toml".to_string(), spec.clone().into_bytes()),
        (
            "datasource.sql".to_string(),
            std::fs::read(root.join("examples/hello/datasource.sql")).unwrap(),
        ),
    ];
    for p in ["hello", "hello-proxy"] {
        let dir = stratus_plugin_artifacts::package_dir(p);
        files.extend(files_of(&dir, &format!("packages/{p}")));
    }

    // Hostile archives: nothing is launched, nothing left under uploads/.
    let uploads = api.st().dir().join("uploads");
    let mut escaping = files.clone();
    escaping.push(("../../escaped".into(), b"x".to_vec()));
    let r = upload(&api, targz_raw_names(&escaping));
    let p = assert_problem(r, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"].as_str().unwrap().contains("../../escaped"),
        "{p}"
    );
    assert!(!api.st().dir().join("escaped").exists());
    let absolute = spec.replace(
        "packages/hello-proxy",
        stratus_plugin_artifacts::package_dir("hello-proxy")
            .to_str()
            .unwrap(),
    );
    let mut outside = files.clone();
    outside[0].1 = absolute.into_bytes();
    let p = assert_problem(upload(&api, targz(&outside)), StatusCode::BAD_REQUEST);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("outside the archive"),
        "{p}"
    );
    assert_problem(
        upload(&api, b"not a tar.gz".to_vec()),
        StatusCode::BAD_REQUEST,
    );
    // Past the body limit the server answers 413 at once and may close the connection
    // before the client has sent everything: either way, nothing is taken.
    let too_big = vec![0u8; 33 << 20];
    // Its own client: the connection the server may close is not pooled for the next request.
    let once = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let sent = api
        .authed(once.post(format!("{}/v1/deployments", api.base)))
        .header("content-type", "application/gzip")
        .body(too_big)
        .send();
    match sent {
        Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "refused uploads leave nothing");
    let list: Value = api.get("/v1/deployments").json().unwrap();
    assert_eq!(list, json!({"deployments": []}));

    let r = upload(&api, targz(&files));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: Value = r.json().unwrap();
    assert_eq!(accepted["name"], "up");
    let d = api.wait_for("up", Duration::from_secs(120), |d| {
        d["state"] == "RUNNING" || d["state"].as_str().unwrap().starts_with("FAILED")
    });
    assert_eq!(d["state"], "RUNNING", "{d}");
    let pids = api.st().agent_pids();
    common::terminate(api.st(), "up");
    assert!(pids.iter().all(|p| !alive(*p)));
}

/// A tar.gz whose names are written into the headers as given (`tar::Builder` refuses `..`).
fn targz_raw_names(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut raw = Vec::new();
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        raw.extend_from_slice(h.as_bytes());
        raw.extend_from_slice(data);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
    }
    raw.resize(raw.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn the_served_openapi_document_is_the_checked_in_one() {
    let api = Api::start();
    let served: Value = api.get("/v1/openapi.json").json().unwrap();
    let path = stratus_plugin_artifacts::repo_root().join("docs/openapi.json");
    if std::env::var_os("STRATUS_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("docs/openapi.json");
    assert!(
        served == checked_in,
        "docs/openapi.json differs from /v1/openapi.json; regenerate it with \
         STRATUS_UPDATE_OPENAPI=1 cargo test --test integration http_api::the_served_openapi"
    );
    for route in ["/v1/deployments", "/v1/deployments/{name}", "/v1/events"] {
        assert!(served["paths"][route].is_object(), "{route} documented");
    }
}

#[test]
fn a_non_loopback_bind_without_tls_is_refused() {
    let st = Stratus::new();
    let out = st.run(&["serve", "--http", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("--insecure-http"), "{err}");
    assert!(!st.dir().join("control.json").exists());
    let out = st.run(&["serve", "--http", "0.0.0.0:0", "--tls-cert", "/x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-key"), "{err}");
    let out = st.run(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        "/nonexistent.key",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/nonexistent.pem"),
        "{err}"
    );
}

#[test]
fn the_api_serves_tls_with_the_given_certificate_and_key() {
    let st = Stratus::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = st.write_file("cert.pem", &cert.cert.pem());
    let key_file = st.write_file("key.pem", &cert.key_pair.serialize_pem());
    let mut child = st
        .cmd()
        .args(["serve", "--http", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let http = loop {
        let info: Option<Value> = std::fs::read_to_string(st.dir().join("control.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(addr) = info.as_ref().and_then(|i| i["http"].as_str()) {
            break addr.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no HTTP address");
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(st.dir().join("keys/operator-token")).unwrap();

    // A client trusting exactly that certificate gets the API over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(&http).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /v1/deployments HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token.trim()
    );
    std::io::Write::write_all(&mut tls, request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tls, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("{\"deployments\":[]}"), "{answer}");

    // Clear text to the TLS port is no request at all.
    let mut plain = std::net::TcpStream::connect(&http).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"GET /v1/deployments HTTP/1.1\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut bytes);
    assert!(!String::from_utf8_lossy(&bytes).contains("deployments"));

    let _ = st.run(&["shutdown"]);
    if !wait_gone(child.id(), Duration::from_secs(5)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[test]
fn open_event_streams_are_bounded() {
    let api = Api::start();
    // The bound of host/http/src/events.rs (MAX_EVENT_STREAMS).
    let max = 64;
    let mut open: Vec<Sse> = (0..max).map(|_| api.events("", None)).collect();
    let refused = api.get("/v1/events");
    let p = assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        p["detail"].as_str().unwrap().contains("64 event streams"),
        "{p}"
    );
    // A closed stream frees its place once the server notices the connection closed.
    drop(open.pop());
    let start = Instant::now();
    loop {
        let r = api.get("/v1/events");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no place freed");
        std::thread::sleep(Duration::from_millis(200));
    }
}
