//! EC2 end to end, through the real binary: moto's EC2 mock (a stand-in for the cloud API,
//! on a loopback port) takes the EC2 driver's calls, and the test plays the hypervisor that
//! moto is not. It watches DescribeInstances and boots every new instance the way a cloud image
//! would: a network namespace of the lab (tests/common/lab.rs, no sshd) with its address, a root
//! filesystem of its own (a private mount namespace, chrooted), and at boot `stratus agent
//! --bootstrap <user-data> --root /`. When moto says an instance is terminated, the hypervisor
//! powers it off. The driver knows none of this.
//!
//! The agents are told no address (cloud bootstraps leave it empty): each learns its own from
//! its control connection, and the control plane records it once checked. Moto makes up a
//! private address on no network for each instance, which the driver reports; the address the
//! agent proves wins, so the load balancer's nodes and the hooks' facts name where the
//! instances really are. An agent claiming another server's address is not believed.

use crate::common;

use base64::Engine as _;
use common::lab::Lab;
use common::moto::{Moto, ec2_provider, provider_table, tag};
use common::serve::{serve, stop};
use common::{Stratus, assert_no_secret_leaked, hello_on_with, read, servers, wait_gone};
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the hypervisor asks moto for instances.
const POLL: Duration = Duration::from_millis(200);
/// How long an agent may take to stop once its instance is terminated.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// What an instance's boot does, as `sh -c` inside its network namespace and a private mount
/// namespace: give it a root of its own (the host's `/usr` and `/etc` read through, its own
/// `/agent`, `/mnt`, `/var`), then start the agent from the user-data, as root, at `/`.
const BOOT: &str = r#"set -e
R="$1"; BIN="$2"
for d in usr etc proc dev opt tmp var/lib/cloud; do mkdir -p "$R/$d"; done
for l in bin lib lib64 sbin; do [ -L "$R/$l" ] || ln -s "usr/$l" "$R/$l"; done
mount --rbind /usr "$R/usr"
mount --rbind /etc "$R/etc"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
touch "$R/opt/stratus"
mount --bind "$BIN" "$R/opt/stratus"
exec chroot "$R" /opt/stratus agent --bootstrap /var/lib/cloud/user-data.json --root /
"#;

/// One instance the hypervisor booted.
struct Instance {
    address: String,
    root: PathBuf,
    agent: Child,
    /// Powered off (moto said terminated).
    off: bool,
}

/// What the hypervisor did, shared with the test.
#[derive(Default)]
struct Booted {
    instances: BTreeMap<String, Instance>,
    /// Anything that went wrong in the hypervisor's thread.
    errors: Vec<String>,
}

/// The test's hypervisor: a thread that boots moto's instances and powers off terminated ones.
struct Hypervisor {
    booted: Arc<Mutex<Booted>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hypervisor {
    /// Boots the `n`th instance on the lab's host `n` (its namespace and first address),
    /// from a disk `image` prepares (given the instance's root).
    fn start(moto_port: u16, lab: Arc<Lab>, dir: PathBuf, image: fn(&Path)) -> Hypervisor {
        let booted = Arc::new(Mutex::new(Booted::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (booted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let moto = Ec2 { port: moto_port };
            while !s.load(Ordering::Relaxed) {
                if let Err(e) = pass(&moto, &lab, (&dir, image), &b) {
                    b.lock().unwrap().errors.push(e);
                }
                std::thread::sleep(POLL);
            }
        });
        Hypervisor {
            booted,
            stop,
            thread: Some(thread),
        }
    }

    /// The instances booted so far: id → (address, root, agent pid, powered off).
    fn instances(&self) -> BTreeMap<String, (String, PathBuf, u32, bool)> {
        let b = self.booted.lock().unwrap();
        b.instances
            .iter()
            .map(|(id, i)| {
                (
                    id.clone(),
                    (i.address.clone(), i.root.clone(), i.agent.id(), i.off),
                )
            })
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.booted.lock().unwrap().errors.clone()
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut b = self.booted.lock().unwrap_or_else(|e| e.into_inner());
        for i in b.instances.values_mut() {
            power_off(i);
        }
    }
}

/// Ends an instance's agent (SIGTERM, then after the grace SIGKILL; only this pid).
fn power_off(i: &mut Instance) {
    if !i.off {
        let pid = i.agent.id() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !wait_gone(i.agent.id(), POWER_OFF_GRACE) {
            let _ = i.agent.kill();
        }
        let _ = i.agent.wait();
        i.off = true;
    }
}

/// Unsigned EC2 calls to moto from the hypervisor's thread (a `Moto` is not `Send`-shared).
struct Ec2 {
    port: u16,
}

impl Ec2 {
    fn call(&self, form: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let body = format!("{form}&Version=2016-11-15");
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let scope = "test/20260101/us-east-1/ec2/aws4_request";
        write!(
            s,
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        Ok(answer)
    }
}

/// What DescribeInstances says of one instance: its state and private address.
fn describe(moto: &Ec2, id: &str) -> Result<(String, Option<String>), String> {
    let xml = moto.call(&format!("Action=DescribeInstances&InstanceId.1={id}"))?;
    let state = xml
        .split_once("<instanceState>")
        .and_then(|(_, rest)| tag(rest, "name"))
        .ok_or_else(|| format!("no state for {id}: {xml}"))?
        .to_owned();
    let address = xml
        .rsplit_once("<privateIpAddress>")
        .and_then(|(_, rest)| rest.split_once("</privateIpAddress>"))
        .map(|(a, _)| a.to_owned());
    Ok((state, address))
}

/// The ids of every instance moto knows.
fn instance_ids(moto: &Ec2) -> Result<Vec<String>, String> {
    let xml = moto.call("Action=DescribeInstances")?;
    Ok(xml
        .split("<instanceId>")
        .skip(1)
        .filter_map(|s| s.split_once("</instanceId>").map(|(id, _)| id.to_owned()))
        .collect())
}

/// One round of the hypervisor: boots new pending/running instances, powers off terminated
/// ones.
fn pass(
    moto: &Ec2,
    lab: &Lab,
    disk: (&Path, fn(&Path)),
    booted: &Mutex<Booted>,
) -> Result<(), String> {
    for id in instance_ids(moto)? {
        let known = booted.lock().unwrap().instances.contains_key(&id);
        let (state, _) = describe(moto, &id)?;
        match state.as_str() {
            "pending" | "running" if !known => {
                let n = booted.lock().unwrap().instances.len();
                if n >= lab.hosts() {
                    return Err(format!("no machine left for {id}"));
                }
                let instance = boot(moto, lab, disk, &id, n)?;
                booted.lock().unwrap().instances.insert(id, instance);
            }
            "shutting-down" | "terminated" | "stopping" | "stopped" if known => {
                let mut b = booted.lock().unwrap();
                if let Some(i) = b.instances.get_mut(&id) {
                    power_off(i);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Boots instance `id` on the lab's host `n`: its user-data becomes the agent's bootstrap.
fn boot(
    moto: &Ec2,
    lab: &Lab,
    (dir, image): (&Path, fn(&Path)),
    id: &str,
    n: usize,
) -> Result<Instance, String> {
    let answer = moto.call(&format!(
        "Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData"
    ))?;
    let encoded = tag(&answer, "value").ok_or_else(|| format!("no user-data: {answer}"))?;
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| e.to_string())?;
    let home = dir.join(id);
    let root = home.join("root");
    std::fs::create_dir_all(root.join("var/lib/cloud")).map_err(|e| e.to_string())?;
    image(&root);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(root.join("var/lib/cloud/user-data.json"))
        .map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, &user_data).map_err(|e| e.to_string())?;
    let console = std::fs::File::create(home.join("console.log")).map_err(|e| e.to_string())?;
    let agent = Command::new("ip")
        .args(["netns", "exec", lab.netns(n)])
        .args(["unshare", "-m", "--propagation", "private"])
        .args(["sh", "-c", BOOT, "boot"])
        .arg(&root)
        .arg(env!("CARGO_BIN_EXE_stratus"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(console.try_clone().map_err(|e| e.to_string())?)
        .stderr(console)
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Instance {
        address: lab.host_addresses(n)[0].to_string(),
        root,
        agent,
        off: false,
    })
}

/// The hello example with its app tier (`app_min` servers) on `[providers.ec2]`.
fn hello_on_ec2(name: &str, moto: &Moto, app_min: u32) -> String {
    let driver = stratus_plugin_artifacts::package_dir("ec2-driver");
    let settings = ec2_provider(&moto.origin(), &driver, "aws-secret");
    let providers = provider_table("ec2", "cloud-driver", &settings);
    hello_on_with(name, app_min, "ec2", &providers)
}

#[test]
fn hello_on_ec2_instances_booted_from_user_data_reaches_running_at_learned_addresses() {
    let st = Stratus::new();
    let moto = Moto::start();
    let lab = Arc::new(Lab::namespaces(2, 1));
    let keys = st.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("aws-secret"), "stratus-test-secret-0123456789").unwrap();
    let control = serve(&st, &["--listen", &format!("{}:0", lab.control_address())]);
    let machines = tempfile::tempdir().unwrap();
    let hv = Hypervisor::start(
        moto.port,
        lab.clone(),
        machines.path().to_path_buf(),
        |_| {},
    );

    let file = st.write_file("e2e.toml", &hello_on_ec2("e2e", &moto, 2));
    st.ok(&["launch", file.to_str().unwrap()]);

    let d = st.deployment("e2e");
    assert_eq!(d["state"], "RUNNING", "{d}");
    let booted = hv.instances();
    assert_eq!(booted.len(), 2, "{booted:?}");
    let app = servers(&d, "app");
    assert_eq!(app.len(), 2, "{d}");
    let mut app_addrs = Vec::new();
    for s in &app {
        assert_eq!(s["agent"], "RUNNING", "{s}");
        assert_eq!(s["provider"], "ec2", "{s}");
        let address = s["address"].as_str().unwrap().to_owned();
        // Each server is at the address of an instance the hypervisor booted, on its network.
        let (id, (_, root, _, _)) = booted
            .iter()
            .find(|(_, (a, ..))| *a == address)
            .unwrap_or_else(|| panic!("{address} is no booted instance's: {booted:?}"));
        assert!(lab.host_of(&address).is_some(), "{s}");
        // Not the address moto made up, which the driver reported at launch.
        let (_, made_up) = describe(&Ec2 { port: moto.port }, id).unwrap();
        assert!(made_up.is_some_and(|m| m != address), "{id}");
        // The agent learned it from its connection; the hooks' facts name it.
        let log = read(&root.join("agent/agent.log"));
        assert!(
            log.contains("learned this server's address from its control connection")
                && log.contains(&address),
            "{id}: {log}"
        );
        let svc = s["services"][0]["id"].as_str().unwrap();
        let conf = read(&root.join("mnt/services").join(svc).join("hello.conf"));
        assert!(conf.contains(&address), "{conf}");
        // The credential in the user-data (which the metadata service keeps serving) was
        // replaced before any hook ran: it admits nobody now.
        let user_data =
            stratus_protocol::Bootstrap::read(&root.join("var/lib/cloud/user-data.json"));
        let (_, answer) = hostile_agent(&user_data.unwrap(), &address);
        assert!(
            answer.contains("unknown server or wrong credential"),
            "{answer}"
        );
        app_addrs.push(address);
    }
    let events = st.ok(&["events"]);
    assert_eq!(
        events.matches("as its agent reported").count(),
        2,
        "{events}"
    );
    // The load balancer (a local server) was told the instances' addresses.
    let lb = servers(&d, "lb");
    let lb_svc = lb[0]["services"][0]["id"].as_str().unwrap();
    let nodes = read(
        &common::server_root(&st, "e2e", &lb[0])
            .join("mnt/services")
            .join(lb_svc)
            .join("nodes.txt"),
    );
    for a in &app_addrs {
        assert!(nodes.contains(&format!("{a}:8080")), "{nodes}");
    }

    // Terminate ends the instances through the driver; the hypervisor powers them off.
    st.ok(&["terminate", "e2e"]);
    assert_eq!(st.deployment("e2e")["state"], "TERMINATED");
    for id in booted.keys() {
        let after = moto.ec2(&format!("Action=DescribeInstances&InstanceId.1={id}"));
        assert!(after.contains("<name>terminated</name>"), "{after}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while hv.instances().values().any(|(.., off)| !off) {
        assert!(
            Instant::now() < deadline,
            "instances still on: {:?}",
            hv.instances()
        );
        std::thread::sleep(POLL);
    }
    for (id, (_, _, pid, _)) in hv.instances() {
        assert!(!common::alive(pid), "agent of {id} still running");
    }
    assert!(hv.errors().is_empty(), "{:?}", hv.errors());
    // The instances' disks hold their bootstrap by design; the control plane's state holds no
    // secret.
    assert_no_secret_leaked(&st, |_| true);
    drop(hv);
    stop(&st, control);
}

/// A hostile image's agent: dials the control plane with the server's real credential (from
/// its user-data) and claims `claim` as its address; returns the connection (to hold open) and
/// the control plane's answer.
fn hostile_agent(
    b: &stratus_protocol::Bootstrap,
    claim: &str,
) -> (
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    String,
) {
    use std::io::{Read, Write};
    let config = stratus_protocol::tls::pinned_client_config(&b.fingerprint);
    let name = stratus_protocol::tls::server_name(b.control_host()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(&b.control).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let hello = serde_json::json!({
        "role": "agent", "deployment": b.deployment, "server_id": b.server_id,
        "credential": b.credential, "pid": 1, "address": claim,
    });
    tls.write_all(format!("{hello}\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        answer.push(byte[0]);
    }
    (tls, String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn an_instances_agent_cannot_claim_another_servers_address() {
    let st = Stratus::new();
    let moto = Moto::start();
    let lab = Lab::namespaces(1, 1);
    let keys = st.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("aws-secret"), "stratus-test-secret-0123456789").unwrap();
    let control = serve(&st, &["--listen", &format!("{}:0", lab.control_address())]);
    let file = st.write_file("claim.toml", &hello_on_ec2("claim", &moto, 1));
    // No hypervisor: the test answers for the instance itself, as a hostile image would.
    let mut launch = st.launch_in_background(&file);
    let ec2 = Ec2 { port: moto.port };
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        if let Some(id) = instance_ids(&ec2).unwrap().pop() {
            break id;
        }
        assert!(Instant::now() < deadline, "no instance on moto");
        std::thread::sleep(POLL);
    };
    let (_, given) = describe(&ec2, &id).unwrap();
    let given = given.expect("moto gives a private address");
    let data = moto.ec2(&format!(
        "Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData"
    ));
    let data = base64::engine::general_purpose::STANDARD
        .decode(tag(&data, "value").expect(&data).trim())
        .unwrap();
    let bootstrap =
        stratus_protocol::Bootstrap::from_json(std::str::from_utf8(&data).unwrap(), "user-data")
            .unwrap();
    assert_eq!(bootstrap.address, "", "a cloud server is told no address");
    // The victim: the database server (local), once it has its address.
    let victim = loop {
        let d = st.deployment("claim");
        if let Some(a) = servers(&d, "db")
            .first()
            .and_then(|s| s["address"].as_str())
            .filter(|a| !a.is_empty())
        {
            break a.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the db server got no address: {d}"
        );
        std::thread::sleep(POLL);
    };
    let (conn, welcome) = hostile_agent(&bootstrap, &victim);
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    let refused = format!(
        "its agent reported {victim}, but its connection comes from {} and its provider did \
         not give that address",
        lab.control_address()
    );
    let events = loop {
        let events = st.ok(&["events"]);
        if events.contains(&refused) || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(POLL);
    };
    assert!(events.contains(&refused), "{events}");
    let app = servers(&st.deployment("claim"), "app");
    assert_eq!(app[0]["address"], given.as_str(), "{}", app[0]);
    drop(conn);

    st.ok(&["terminate", "claim"]);
    // The launch in progress says it was terminated (its pid is ours to end if it hangs).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = launch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = launch.kill();
            panic!("the launch did not end once its deployment was terminated");
        }
        std::thread::sleep(POLL);
    };
    assert!(!status.success());
    let after = moto.ec2(&format!("Action=DescribeInstances&InstanceId.1={id}"));
    assert!(after.contains("<name>terminated</name>"), "{after}");
    assert_no_secret_leaked(&st, |_| true);
    stop(&st, control);
}

/// An instance whose agent cannot keep a new credential (here its image has a directory where
/// the agent stores it) would run plugins while the credential in its user-data, readable from
/// the metadata service, still admits anyone: its launch fails at the replacement instead.
#[test]
fn an_instance_that_cannot_keep_a_new_credential_fails_its_launch() {
    let st = Stratus::new();
    let moto = Moto::start();
    let lab = Arc::new(Lab::namespaces(1, 1));
    let keys = st.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("aws-secret"), "stratus-test-secret-0123456789").unwrap();
    let control = serve(&st, &["--listen", &format!("{}:0", lab.control_address())]);
    let machines = tempfile::tempdir().unwrap();
    let image = |root: &Path| std::fs::create_dir_all(root.join("agent/credential")).unwrap();
    let hv = Hypervisor::start(moto.port, lab.clone(), machines.path().to_path_buf(), image);
    let file = st.write_file("stuck.toml", &hello_on_ec2("stuck", &moto, 1));
    let out = st.run(&["launch", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "launched with a live launch credential"
    );
    let d = st.deployment("stuck");
    assert_eq!(d["state"], "FAILED", "{d}");
    let events = st.ok(&["events", "--deployment", "stuck"]);
    assert!(
        events.contains("server/app-1/credential") && events.contains("storing the new credential"),
        "{events}"
    );
    let (_, (_, root, ..)) = hv
        .instances()
        .into_iter()
        .next()
        .expect("an instance booted");
    let svc_dirs = std::fs::read_dir(root.join("mnt/services")).map(|d| d.count());
    assert!(svc_dirs.unwrap_or(0) == 0, "a hook ran on the instance");
    st.ok(&["terminate", "stuck"]);
    drop(hv);
    stop(&st, control);
}
