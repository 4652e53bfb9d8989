//! Cloud files over the network with the real binary: agents fetch every package and data
//! source from the control plane's HTTPS file endpoint, and the store can be an S3 bucket.
//! moto's server mode (`moto_server`, PyPI, installed by scripts/install-deps.sh) stands in
//! for S3 on loopback.

use crate::common;

use common::moto::Moto;
use common::serve::files_url;
use common::{
    Stratus, agent_credential, hello_deployment, launch_credential, read, server_root, servers,
    terminate,
};

/// Creates a bucket (moto does not check signatures).
fn create_bucket(moto: &Moto, name: &str) {
    let r = reqwest::blocking::Client::new()
        .put(format!("{}/{name}", moto.origin()))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Every key in the bucket.
fn bucket_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{}/{bucket}?list-type=2", moto.origin());
        if let Some(t) = &token {
            url.push_str(&format!("&continuation-token={t}"));
        }
        let xml = reqwest::blocking::get(url).unwrap().text().unwrap();
        keys.extend(between(&xml, "<Key>", "</Key>"));
        token = between(&xml, "<NextContinuationToken>", "</NextContinuationToken>")
            .into_iter()
            .next();
        if token.is_none() {
            return keys;
        }
    }
}

fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|s| s.split(close).next())
        .map(str::to_string)
        .collect()
}

/// The agents of a launch on the local store fetched everything over HTTPS: each says so in
/// its log, and none names the control plane's cloud-files directory.
#[test]
fn agents_fetch_packages_and_data_sources_from_the_file_endpoint() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("files", 1));
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("files");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let store = st.dir().join("cloud-files");
    for tier in ["lb", "app", "db"] {
        for s in servers(&d, tier) {
            let log = read(&server_root(&st, "files", &s).join("agent/agent.log"));
            assert!(
                log.contains("fetched from the file endpoint"),
                "{tier}: {log}"
            );
            assert!(!log.contains(store.to_str().unwrap()), "{tier}: {log}");
        }
    }
    let db = &servers(&d, "db")[0];
    let log = read(&server_root(&st, "files", db).join("agent/agent.log"));
    assert!(log.contains("data source fetched"), "{log}");
    terminate(&st, "files");
}

/// With an S3 bucket as the store, hello reaches RUNNING, its objects are in the bucket, and
/// nothing is kept in the state directory's local store.
#[test]
fn an_s3_bucket_as_the_store_launches_hello() {
    let moto = Moto::start();
    create_bucket(&moto, "stratus-files");
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("s3hello", 1));
    let setting = format!(
        "s3://stratus-files/cf?endpoint={}&region=us-east-1&allow_http=true",
        moto.origin()
    );
    let out = st
        .cmd()
        .env("STRATUS_CLOUD_FILES", &setting)
        .env("AWS_ACCESS_KEY_ID", "moto-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "moto-test-secret")
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d = st.deployment("s3hello");
    assert_eq!(d["state"], "RUNNING", "{d}");

    let keys = bucket_keys(&moto, "stratus-files");
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    assert!(has("cf/packages/s3hello-service-app/"), "{keys:?}");
    assert!(has("cf/index/sha256/"), "{keys:?}");
    assert!(has("cf/data/sha256/"), "{keys:?}");
    assert!(has("cf/grants/s3hello/"), "{keys:?}");
    assert!(has("cf/data-meta/data-sources/s3hello/"), "{keys:?}");
    assert!(
        !st.dir().join("cloud-files/packages").exists(),
        "packages went to the bucket, not the state directory"
    );
    let control_log = read(&st.dir().join("logs/control.log"));
    assert!(!control_log.contains("moto-test-secret"), "{control_log}");
    terminate(&st, "s3hello");
}

/// What a server's agent knows: its identity from its bootstrap file, and the credential it
/// presents now.
fn bootstrap_of(st: &Stratus, dep: &str, server: &serde_json::Value) -> serde_json::Value {
    let root = server_root(st, dep, server);
    let mut boot: serde_json::Value =
        serde_json::from_str(&read(&root.join("agent/bootstrap.json"))).unwrap();
    boot["credential"] = agent_credential(&root).into();
    boot
}

/// Fetches `hex` from the endpoint as the server whose bootstrap is `boot`: `Ok` or the
/// HTTP status it was refused with.
fn fetch_as(st: &Stratus, url: &str, boot: &serde_json::Value, hex: &str) -> Result<(), u16> {
    use stratus_cloud::{AgentIdentity, Beneath, Expected, FilesError, RemoteFiles, Secret};
    let pin: stratus_protocol::Fingerprint = boot["fingerprint"].as_str().unwrap().parse().unwrap();
    let identity = AgentIdentity {
        deployment: boot["deployment"].as_str().unwrap().into(),
        server_id: boot["server_id"].as_str().unwrap().into(),
        credential: Secret::new(boot["credential"].as_str().unwrap()),
    };
    let tls = stratus_protocol::tls::pinned_client_config(&pin);
    let remote = RemoteFiles::new(url, tls, identity).unwrap();
    let index = read(
        &st.dir()
            .join(format!("cloud-files/index/sha256/{hex}.json")),
    );
    let size = serde_json::from_str::<serde_json::Value>(&index).unwrap()["size"]
        .as_u64()
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let expected = Expected {
        object: hex.into(),
        sha256: hex.into(),
        size,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(remote.fetch_file(
        &expected,
        &Beneath::open(out.path()).unwrap(),
        std::path::Path::new("x"),
    ));
    match got {
        Ok(_) => Ok(()),
        Err(FilesError::Refused { status, .. }) => Err(status),
        Err(e) => panic!("{e}"),
    }
}

/// The addresses granted to a deployment's servers.
fn granted(st: &Stratus, dep: &str) -> Vec<String> {
    std::fs::read_dir(st.dir().join("cloud-files/grants").join(dep))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The real control plane's endpoint: a server reads its own deployment's objects, not another
/// deployment's (even knowing the digest), and nothing once it is terminated.
#[test]
fn the_file_endpoint_serves_a_server_only_its_deployments_objects_while_it_lives() {
    let st = Stratus::new();
    // fb's data source differs from fa's, so one address is fb's alone.
    let sql = stratus_plugin_artifacts::repo_root().join("examples/hello/datasource.sql");
    let own = st.write_file("fb.sql", &format!("{}\n-- fb's own\n", read(&sql)));
    let fb = hello_deployment("fb", 1).replace(sql.to_str().unwrap(), own.to_str().unwrap());
    for (name, text) in [("fa", hello_deployment("fa", 1)), ("fb", fb)] {
        let file = st.write_file(&format!("{name}.toml"), &text);
        st.ok(&["launch", file.to_str().unwrap()]);
    }
    let url = files_url(&st);
    let (a, b) = (st.deployment("fa"), st.deployment("fb"));
    let a_db = bootstrap_of(&st, "fa", &servers(&a, "db")[0]);
    let b_db = bootstrap_of(&st, "fb", &servers(&b, "db")[0]);
    let only_b: Vec<String> = {
        let a_has = granted(&st, "fa");
        granted(&st, "fb")
            .into_iter()
            .filter(|h| !a_has.contains(h))
            .collect()
    };
    assert!(
        !only_b.is_empty(),
        "fb's data source is granted to fb alone"
    );
    let some_a = granted(&st, "fa").pop().unwrap();
    assert_eq!(fetch_as(&st, &url, &a_db, &some_a), Ok(()));
    for hex in &only_b {
        assert_eq!(fetch_as(&st, &url, &a_db, hex), Err(404), "{hex}");
        assert_eq!(fetch_as(&st, &url, &b_db, hex), Ok(()), "{hex}");
    }
    // A stranger that knows a digest but holds a made-up credential.
    let mut forged = a_db.clone();
    forged["credential"] = "0".repeat(64).into();
    assert_eq!(fetch_as(&st, &url, &forged, &some_a), Err(401));
    // The launch credential, in the bootstrap (a cloud server's user-data), was replaced.
    let mut launch = a_db.clone();
    launch["credential"] = launch_credential(&server_root(&st, "fa", &servers(&a, "db")[0])).into();
    assert_ne!(launch, a_db);
    assert_eq!(fetch_as(&st, &url, &launch, &some_a), Err(401));
    st.ok(&["terminate", "fa"]);
    // fb keeps the control plane up.
    assert_eq!(
        fetch_as(&st, &url, &a_db, &some_a),
        Err(401),
        "terminated server refused"
    );
    terminate(&st, "fb");
}

/// An agent given no code cache (as on a machine without the control plane's disk) compiles
/// what it loads and hello still reaches RUNNING.
#[test]
fn agents_without_a_code_cache_compile_themselves_and_hello_runs() {
    let st = Stratus::new();
    let file = st.write_file("hello.toml", &hello_deployment("nocache", 1));
    let out = st
        .cmd()
        .env("STRATUS_NO_AGENT_CODE_CACHE", "true")
        .args(["launch", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = st.deployment("nocache");
    assert_eq!(d["state"], "RUNNING", "{d}");
    for tier in ["lb", "app", "db"] {
        for s in servers(&d, tier) {
            let log = read(&server_root(&st, "nocache", &s).join("agent/agent.log"));
            assert!(log.contains("compiled here"), "{tier}: {log}");
            assert!(!log.contains("from the code cache (hit)"), "{tier}: {log}");
        }
    }
    terminate(&st, "nocache");
}
