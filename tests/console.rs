//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! Debian's `chromium` and `chromium-driver`, see scripts/install-deps.sh) against the HTTP
//! API of a control plane that `stratus launch` started. Operators type the token once, see
//! hello's servers turn RUNNING live, scale the app tier by one and watch the new server come
//! up; a hostile description renders as text. A screenshot is left at
//! `target/console-screenshot.png`.

use crate::common;

use common::{Stratus, hello_deployment, servers};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a launch or a scale may take to show in the page on a loaded 2-core machine.
const SHOW_LIMIT: Duration = Duration::from_secs(180);

/// A plugin setting that would run script if it became markup.
const ATTACK: &str = "<img src=x onerror=window.__stratus_pwned=3>";

/// A description that would run script if the console ever turned data into markup.
const HOSTILE: &str = "hello <img src=x onerror=\"window.__stratus_pwned=1\"><script>window.__stratus_pwned=2</script> & more";

/// chromedriver on a free loopback port, in a process group of its own so that dropping this
/// ends it and the browser it started (by the group's id, which is its pid).
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (install with scripts/install-deps.sh chromium chromium-driver)");
        let driver = Driver {
            child,
            port,
            _profile: tempfile::Builder::new()
                .prefix("stratus-console-chromium-")
                .tempdir()
                .expect("profile dir"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    async fn browser(&self) -> Client {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1440,960",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The HTTP API's address from `<state>/control.json`, once the control plane wrote it.
fn http_addr(st: &Stratus) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(st.dir().join("control.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(addr) = v["http"].as_str() {
            assert!(
                addr.starts_with("127."),
                "the API listens on loopback: {addr}"
            );
            return addr.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no http address in control.json: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Polls `probe` until it answers `Some`, failing with `what` and the last view after `limit`.
async fn wait_for<T>(
    c: &Client,
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut(&Client) -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe(c).await {
            return v;
        }
        if start.elapsed() > limit {
            let seen = server_states(c, "").await;
            panic!("timed out after {limit:?} waiting for {what}; the page shows {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `(server id, state word)` of every server box of `tier` (every tier for "").
async fn server_states(c: &Client, tier: &str) -> Vec<(String, String)> {
    let css = if tier.is_empty() {
        "g.server".to_string()
    } else {
        format!("g.server[data-tier=\"{tier}\"]")
    };
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(&css)).await.unwrap_or_default() {
        let id = attr(&e, "data-server").await;
        let state = attr(&e, "data-state").await;
        out.push((id, state));
    }
    out
}

async fn attr(e: &Element, name: &str) -> String {
    e.attr(name).await.ok().flatten().unwrap_or_default()
}

/// The tier's servers as the page shows them, once there are `n` and all are RUNNING.
async fn running(c: &Client, tier: &str, n: usize) -> Option<Vec<String>> {
    let states = server_states(c, tier).await;
    (states.len() == n && states.iter().all(|(_, s)| s == "RUNNING"))
        .then(|| states.into_iter().map(|(id, _)| id).collect())
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn enter_token(c: &Client, token: &str) {
    let input = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#token-input"))
        .await
        .expect("the token prompt");
    input.send_keys(token).await.expect("type the token");
    c.find(Locator::Css("#token-submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click submit");
}

/// Opens the console at `addr` in a fresh headless Chromium and runs `session` there; a
/// screenshot named `shot` is saved under `target/` whether it passed or not (it shows what
/// went wrong), and the browser and chromedriver end either way.
fn in_browser(addr: &str, shot: &str, session: impl AsyncFnOnce(&Client)) {
    let driver = Driver::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let c = rt.block_on(driver.browser());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            c.goto(&format!("http://{addr}/"))
                .await
                .expect("open the console");
            session(&c).await
        })
    }));
    rt.block_on(async {
        if let Ok(png) = c.screenshot().await {
            let path = target_dir().join(shot);
            let _ = std::fs::create_dir_all(path.parent().unwrap());
            std::fs::write(&path, png).expect("write the screenshot");
            eprintln!("screenshot: {}", path.display());
        }
        let _ = c.close().await;
    });
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn operator_token(st: &Stratus) -> String {
    std::fs::read_to_string(st.dir().join("keys/operator-token"))
        .expect("operator token")
        .trim()
        .to_string()
}

#[test]
fn the_console_follows_hello_live_scales_the_app_tier_and_renders_hostile_text_as_text() {
    let st = Stratus::new();
    let hello = hello_deployment("hello", 2).replace(
        "description = \"load balancer, two application servers and a database, with the hello plugins\"",
        &format!("description = {}", toml_string(HOSTILE)),
    );
    assert!(
        hello.contains("onerror"),
        "the hostile description is in the file"
    );
    let file = st.write_file("hello.toml", &hello);
    // The page is opened while the launch goes on: what it shows later comes live.
    st.ok(&["launch", "--no-wait", file.to_str().unwrap()]);
    let addr = http_addr(&st);
    let token = operator_token(&st);
    in_browser(&addr, "console-screenshot.png", async |c| {
        session(c, &st, &token).await
    });
    common::terminate(&st, "hello");
}

#[test]
fn text_from_a_hostile_file_and_plugin_stays_text_in_the_console() {
    let st = Stratus::new();
    // A control plane that stays up after the launch fails, so the page can show the failure.
    let mut serve = st
        .cmd()
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stratus serve");
    let addr = http_addr(&st);
    let token = operator_token(&st);
    // The hostile plugin fails configure with "unknown attack `<its attack setting>`": the
    // setting reaches the deployment's reason, the service's, an event and the hook log.
    let hostile = stratus_plugin_artifacts::package_dir("hostile");
    let file = common::one_service(
        &st,
        "evil",
        &hostile,
        &format!("attack = {}", toml_string(ATTACK)),
        "",
    );
    let text = common::read(&file).replacen(
        "[deployment]\n",
        &format!("[deployment]\ndescription = {}\n", toml_string(HOSTILE)),
        1,
    );
    std::fs::write(&file, text).unwrap();
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the launch fails in configure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    in_browser(&addr, "console-hostile-screenshot.png", async |c| {
        enter_token(c, &token).await;
        wait_for(c, "the FAILED deployment", SHOW_LIMIT, async |c| {
            (text_of(c, "#dep-state").await == "FAILED").then_some(())
        })
        .await;
        let reason = text_of(c, "#dep-reason").await;
        assert!(reason.contains(ATTACK), "the reason as text: {reason}");
        assert!(text_of(c, "#dep-description").await.contains("<script>"));
        wait_for(
            c,
            "the failure's event",
            Duration::from_secs(30),
            async |c| {
                text_of(c, "#event-list")
                    .await
                    .contains(ATTACK)
                    .then_some(())
            },
        )
        .await;
        c.find(Locator::Css("g.server"))
            .await
            .expect("the server box")
            .click()
            .await
            .unwrap();
        wait_for(
            c,
            "the service's reason",
            Duration::from_secs(30),
            async |c| {
                let services = text_of(c, "#srv-services").await;
                (services.contains("FAILED") && services.contains(ATTACK)).then_some(())
            },
        )
        .await;
        wait_for(c, "the hook log", Duration::from_secs(30), async |c| {
            text_of(c, "#srv-log").await.contains(ATTACK).then_some(())
        })
        .await;
        assert_nothing_injected(c).await;
    });
    st.ok(&["terminate", "evil"]);
    let _ = st.run(&["shutdown"]);
    if !common::wait_gone(serve.id(), Duration::from_secs(10)) {
        let _ = serve.kill();
    }
    let _ = serve.wait();
}

/// No element was made from data and no script of it ran.
async fn assert_nothing_injected(c: &Client) {
    assert!(
        c.find_all(Locator::Css("img, script:not([src]), iframe, object"))
            .await
            .unwrap()
            .is_empty(),
        "data became elements"
    );
    let clean = c
        .execute("return window.__stratus_pwned === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(clean, json!(true), "a script from the data ran");
}

/// Everything the browser does with hello.
async fn session(c: &Client, st: &Stratus, token: &str) {
    // A wrong token is refused in the prompt and not kept.
    enter_token(c, "not-the-token").await;
    wait_for(
        c,
        "the refusal of a wrong token",
        Duration::from_secs(20),
        async |c| {
            text_of(c, "#token-error")
                .await
                .contains("refused")
                .then_some(())
        },
    )
    .await;
    c.find(Locator::Css("#token-input"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    enter_token(c, token).await;

    // hello's servers turn RUNNING in the page, without a reload.
    let before = st.deployment("hello");
    eprintln!("when the token was entered, hello was {}", before["state"]);
    let apps = wait_for(c, "two RUNNING app servers", SHOW_LIMIT, async |c| {
        running(c, "app", 2).await
    })
    .await;
    for tier in ["lb", "db"] {
        wait_for(c, "the lb and db servers RUNNING", SHOW_LIMIT, async |c| {
            running(c, tier, 1).await
        })
        .await;
    }
    // The page agrees with the status the CLI reads.
    let d = st.deployment("hello");
    let cli: Vec<String> = servers(&d, "app")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(apps, cli, "the page shows the app servers status knows");

    // Tiers in dependency order from the status's `balances` and `depends_on`, with arrows
    // from the load balancer to each app server and from app to db.
    let tier = |name: &str| {
        d["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(tier("lb")["balances"], "app", "{d}");
    assert_eq!(tier("app")["depends_on"], json!(["db"]), "{d}");
    let order = c
        .execute(
            "return [...document.querySelectorAll('.tier-head')]\
             .sort((a, b) => a.offsetLeft - b.offsetLeft).map((h) => h.dataset.tier)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(order, json!(["lb", "app", "db"]), "columns left to right");
    let count = async |css: &str| c.find_all(Locator::Css(css)).await.unwrap().len();
    assert_eq!(count("path.arrow-lb").await, 2, "lb-1 to each app server");
    assert_eq!(count("path.arrow-dep").await, 1, "app depends on db");

    // The token is kept for this tab's session only, and survives a reload.
    let kept = c
        .execute(
            "return sessionStorage.getItem('stratus.operator-token')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!(token));
    assert_eq!(
        c.execute("return localStorage.length", vec![])
            .await
            .unwrap(),
        json!(0),
        "nothing is kept beyond the session"
    );

    // The hostile description is text: no element was made of it and no script ran.
    let description = text_of(c, "#dep-description").await;
    assert!(description.contains("<img src=x onerror="), "{description}");
    assert!(description.contains("<script>"), "{description}");
    assert_nothing_injected(c).await;

    // Events stream in.
    wait_for(
        c,
        "events in the events panel",
        Duration::from_secs(30),
        async |c| {
            let rows = c.find_all(Locator::Css("#event-list .event")).await.ok()?;
            (!rows.is_empty()).then_some(())
        },
    )
    .await;
    let live = text_of(c, "#live").await;
    assert_eq!(live, "live", "the event stream is connected");

    // A server's details: services with health, and its hook log tail.
    let first = &apps[0];
    c.find(Locator::Css(&format!("g.server[data-server=\"{first}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        c,
        "the server's details",
        Duration::from_secs(30),
        async |c| {
            let title = text_of(c, "#srv-title").await;
            let services = text_of(c, "#srv-services").await;
            (title == *first && services.contains("app") && services.contains("RUNNING"))
                .then_some(())
        },
    )
    .await;
    let log = wait_for(c, "the hook log tail", Duration::from_secs(30), async |c| {
        let log = text_of(c, "#srv-log").await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert!(
        !log.contains("could not be read"),
        "the hook log of {first}: {log}"
    );

    // Scale the app tier by one: a third server appears and turns RUNNING.
    let plus = c
        .find(Locator::Css(
            ".tier-head[data-tier=\"app\"] button.scale-up",
        ))
        .await
        .expect("the app tier's + button");
    wait_for(
        c,
        "the + button enabled",
        Duration::from_secs(30),
        async |_| plus.is_enabled().await.ok()?.then_some(()),
    )
    .await;
    plus.click().await.expect("click +");
    let three = wait_for(c, "three RUNNING app servers", SHOW_LIMIT, async |c| {
        running(c, "app", 3).await
    })
    .await;
    let new: Vec<&String> = three.iter().filter(|id| !apps.contains(id)).collect();
    assert_eq!(new.len(), 1, "one new app server: {three:?}");
    assert_eq!(
        c.find_all(Locator::Css("path.arrow-lb"))
            .await
            .unwrap()
            .len(),
        3,
        "the new server is balanced too"
    );
    let target = text_of(c, ".tier-head[data-tier=\"app\"] .tier-target").await;
    assert!(target.contains("target 3"), "{target}");
    let d = st.deployment("hello");
    assert_eq!(servers(&d, "app").len(), 3, "{d}");
    let app = d["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app")
        .unwrap();
    assert_eq!(app["target"]["count"], 3, "{app}");
    // Each journal event once, in order.
    let ids = c
        .execute(
            "return [...document.querySelectorAll('#event-list .event')].map((e) => Number(e.dataset.id))",
            vec![],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = serde_json::from_value(ids).unwrap();
    assert!(ids.len() > 10, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/",
        "everything happened without leaving the page"
    );
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
