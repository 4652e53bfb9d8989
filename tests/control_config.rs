//! The control plane's configuration file (`stratus serve --config FILE`) through the real
//! binary: a tier names a provider declared only there, agents dial an advertised host name
//! (`localhost`) and fetch from a file endpoint on a fixed port; a deployment may not declare
//! a table under a configured provider's name; a restarted control plane without the file
//! still knows the provider; a configured cloud-driver provider launches on moto with its
//! secret by key reference; flags win over the file; bad files and a port in use are refused
//! naming what is wrong and where; an upload naming a configured provider stays confined.

use crate::common;

use base64::Engine as _;
use common::moto::{Moto, free_port, provider_table, tag};
use common::serve::{control_info, files_url, serve, serve_refused, stop};
use common::{Stratus, assert_no_secret_leaked, hello_on, read, server_root, servers};
use std::net::TcpListener;
use std::time::Duration;

#[test]
fn a_tier_runs_on_a_provider_declared_only_in_the_control_planes_configuration() {
    let st = Stratus::new();
    let (control, files) = (free_port(), free_port());
    let config = st.write_file(
        "control.toml",
        &format!(
            "listen = \"127.0.0.1:{control}\"\nadvertise = \"localhost:{control}\"\n\
             files-listen = \"127.0.0.1:{files}\"\n\n[providers.near]\ntype = \"local\"\n"
        ),
    );
    let serving = serve(&st, &["--config", config.to_str().unwrap()]);
    assert_eq!(files_url(&st), format!("https://localhost:{files}"));
    let file = st.write_file("near.toml", &hello_on("near", "near", ""));
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = st.deployment("near");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let app = servers(&d, "app");
    assert_eq!(app[0]["provider"], "near", "{}", app[0]);
    assert_eq!(servers(&d, "lb")[0]["provider"], "local");
    // The agent was told the name and resolved it; it fetched the packages it runs.
    let boot: serde_json::Value = serde_json::from_str(&read(
        &server_root(&st, "near", &app[0]).join("agent/bootstrap.json"),
    ))
    .unwrap();
    assert_eq!(boot["control"], format!("localhost:{control}"), "{boot}");

    // A file declaring its own `near` is refused, naming the configuration file.
    let other = st.write_file(
        "mine.toml",
        &hello_on("mine", "near", "[providers.near]\ntype = \"local\"\n"),
    );
    let out = st.run(&["launch", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "provider `near` is declared by the control plane's configuration {}",
            config.display()
        )),
        "{err}"
    );

    // Started again with `near` changed in the file, the control plane still knows the
    // `near` the deployment was launched with, from its recorded text: the agents come back,
    // `apply` of the same file refuses the changed table, and terminate ends them through it.
    stop(&st, serving);
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{control}\"\n[providers.near]\ntype = \"cloud-driver\"\n\
             driver = \"/nowhere\"\n"
        ),
    )
    .unwrap();
    let serving = serve(&st, &["--config", config.to_str().unwrap()]);
    let back = common::wait_for(&st, "near", Duration::from_secs(90), |d| {
        servers(d, "app")[0]["agent"] == "RUNNING"
    });
    assert_eq!(servers(&back, "app")[0]["agent"], "RUNNING", "{back}");
    let out = st.run(&["apply", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("provider near changed: its servers were launched with the old settings"),
        "{err}"
    );
    let pids = common::terminate(&st, "near");
    let app_pid = app[0]["pid"].as_u64().unwrap() as u32;
    assert!(pids.contains(&app_pid), "{pids:?}");
    stop(&st, serving);
    assert_no_secret_leaked(&st, |_| true);
}

#[test]
fn flags_win_over_the_configuration_file() {
    let st = Stratus::new();
    let (in_file, in_flag) = (free_port(), free_port());
    let config = st.write_file(
        "control.toml",
        &format!("listen = \"127.0.0.1:{in_file}\"\n"),
    );
    let listen = format!("127.0.0.1:{in_flag}");
    let serving = serve(
        &st,
        &["--config", config.to_str().unwrap(), "--listen", &listen],
    );
    let (address, _) = control_info(st.dir()).unwrap();
    assert_eq!(address, listen);
    stop(&st, serving);
}

#[test]
fn bad_configuration_files_and_a_taken_port_are_refused_naming_them() {
    let st = Stratus::new();
    let bad = st.write_file(
        "bad.toml",
        "listen = \"127.0.0.1:0\"\nfiles-port = 7001\n[providers.p]\ntype = \"local\"\n\
         password = \"hunter2\"\n",
    );
    let err = serve_refused(&st, &["--config", bad.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}:2:1: unknown field `files-port`",
            bad.display()
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let bad = st.write_file(
        "bad2.toml",
        "advertise = \"not a host:1\"\n[providers.p]\ntype = \"local\"\npassword = \"hunter2\"\n",
    );
    let err = serve_refused(&st, &["--config", bad.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:1:13: `not a host:1`", bad.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:4:1: setting `password` of provider `p`",
            bad.display()
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let missing = st.dir().join("absent.toml");
    let err = serve_refused(&st, &["--config", missing.to_str().unwrap()]);
    assert!(
        err.contains(&format!("configuration file {}", missing.display())),
        "{err}"
    );

    // The file endpoint's fixed port is held by someone else: no control plane starts.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let err = serve_refused(&st, &["--files-listen", &at]);
    assert!(
        err.contains(&format!(
            "the file endpoint cannot listen on {at} (files-listen)"
        )),
        "{err}"
    );
    assert!(control_info(st.dir()).is_none());
}

#[test]
fn an_advertised_host_name_is_in_the_generated_certificate_and_plaintext_refuses_it() {
    let st = Stratus::new();
    let name = "control.stratus.test";
    let advertise = format!("{name}:7400");
    let err = serve_refused(&st, &["--agent-plaintext", "--advertise", &advertise]);
    assert!(
        err.contains(&format!(
            "plaintext on {advertise}, which is not a loopback"
        )),
        "{err}"
    );
    let err = serve_refused(&st, &["--advertise", "control_stratus:7400"]);
    assert!(
        err.contains("`control_stratus:7400` is not a host:port"),
        "{err}"
    );

    let serving = serve(&st, &["--advertise", &advertise]);
    let pem = read(&st.dir().join("tls/control.crt"));
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    assert!(
        der.windows(name.len()).any(|w| w == name.as_bytes()),
        "the certificate does not name {name}"
    );
    stop(&st, serving);
}

/// An archive uploaded over the HTTP API is checked for paths outside it as launch reads it:
/// naming a provider of the configuration (which a plain parse does not know) must not let
/// absolute paths through.
#[test]
fn an_upload_naming_a_configured_provider_is_still_confined_to_its_archive() {
    let st = Stratus::new();
    let config = st.write_file("control.toml", "[providers.near]\ntype = \"local\"\n");
    let serving = serve(&st, &["--config", config.to_str().unwrap()]);
    let info: serde_json::Value =
        serde_json::from_str(&read(&st.dir().join("control.json"))).unwrap();
    let http = info["http"].as_str().unwrap().to_string();
    let token = read(&st.dir().join("keys/operator-token"));
    // hello_deployment names its packages and data source by absolute paths.
    let text = hello_on("escape", "near", "");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(text.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "deployment.toml", text.as_bytes())
        .unwrap();
    let body = tar.into_inner().unwrap().finish().unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{http}/v1/deployments"))
        .bearer_auth(token.trim())
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .unwrap();
    let status = r.status();
    let problem = r.text().unwrap();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem.contains("outside the archive"), "{problem}");
    let deployments = st.status()["deployments"].clone();
    assert!(
        deployments.as_array().is_none_or(|d| d.is_empty()),
        "{deployments}"
    );
    stop(&st, serving);
}

/// A cloud-driver provider declared in the configuration, its secret a key reference: a tier
/// naming it gets an instance from moto (the driver read the key, the table came from the
/// file), and terminate ends the instance through the recorded table. No secret leaks.
#[test]
fn a_cloud_driver_provider_of_the_configuration_launches_on_moto() {
    let st = Stratus::new();
    let moto = Moto::start();
    let keys = st.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("aws-secret"), "stratus-config-secret-0123456789").unwrap();
    let driver = stratus_plugin_artifacts::package_dir("ec2-driver");
    let table = provider_table(
        "cloud",
        "cloud-driver",
        &moto.ec2_provider(&driver, "aws-secret"),
    );
    let config = st.write_file("control.toml", &table);
    let serving = serve(&st, &["--config", config.to_str().unwrap()]);
    // Moto boots nothing: the launch fails for want of an agent, soon.
    let text = hello_on("sky", "cloud", "").replace(
        "provider = \"cloud\"\n",
        "provider = \"cloud\"\nboot-timeout = \"2s\"\n",
    );
    let file = st.write_file("sky.toml", &text);
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(!out.status.success(), "no agent ever dialled");
    let described = moto.ec2("Action=DescribeInstances");
    let id = tag(&described, "instanceId")
        .unwrap_or_else(|| panic!("no instance on moto: {described}"))
        .to_owned();
    assert!(
        described.contains("<value>sky-app-1</value>"),
        "{described}"
    );
    assert_eq!(
        servers(&st.deployment("sky"), "app")[0]["provider"],
        "cloud"
    );

    common::terminate(&st, "sky");
    let after = moto.ec2(&format!("Action=DescribeInstances&InstanceId.1={id}"));
    assert!(after.contains("<name>terminated</name>"), "{after}");
    stop(&st, serving);
    assert_no_secret_leaked(&st, |_| true);
}
