//! A lab of machines on one: per host a network namespace joined to a bridge in the root
//! namespace by a veth pair, its own addresses, and a real OpenSSH `sshd` (own host key, the
//! lab's client key authorized) running in a private mount namespace where a tmpfs covers the
//! remote directory, so every host has its own view of it. The control plane reaches the hosts
//! at their addresses from the bridge's address, and the hosts reach each other across the
//! bridge. `Drop` ends every process in the lab's namespaces (all of them the lab's: it made
//! the namespaces) and removes every namespace, link and claim it made; what a test process
//! killed before its labs dropped left is removed by the next process making a lab.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The lab's subnets are `10.231.<k>.0/24`, one `k` per lab alive on the machine.
const SUBNET_PREFIX: [u8; 2] = [10, 231];

/// Where labs claim their subnet (`<k>` holds the claiming process's pid), so labs of
/// parallel tests and of other test processes never share one.
const CLAIMS_DIR: &str = "/run/stratus-lab";

/// At most this many addresses fit a /24 beside the bridge's `.1` (and `.255`).
const MAX_ADDRESSES: usize = 250;

/// The size limit of each host's tmpfs remote directory: a debug `stratus` binary is 250 MB,
/// and servers launched on one host at once may each copy it before one has finished.
const REMOTE_TMPFS_SIZE: &str = "2g";

/// How long an sshd may take to listen.
const SSHD_START_LIMIT: Duration = Duration::from_secs(10);

/// How long `Drop` waits for the processes of a namespace to be gone after SIGKILL.
const END_LIMIT: Duration = Duration::from_secs(10);

/// Labs made by this process so far: with the pid, it makes every name unique.
static LABS: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    dir: tempfile::TempDir,
    subnet: u8,
    bridge: String,
    hosts: Vec<Host>,
    with_sshd: bool,
}

struct Host {
    netns: String,
    veth: String,
    addresses: Vec<Ipv4Addr>,
    sshd: Option<Child>,
}

impl Lab {
    /// `hosts` hosts, each with `addresses_per_host` addresses and a running sshd.
    pub fn new(hosts: usize, addresses_per_host: usize) -> Lab {
        let mut lab = Lab::namespaces(hosts, addresses_per_host);
        lab.with_sshd = true;
        lab.make_keys();
        for i in 0..hosts {
            lab.start_sshd(i);
        }
        lab.write_known_hosts();
        for i in 0..hosts {
            lab.wait_listening(i);
        }
        lab
    }

    /// The network part alone: the bridge and per host a namespace with its addresses, no
    /// sshd (for tests that start their own programs in the namespaces, see [`Lab::command`]).
    pub fn namespaces(hosts: usize, addresses_per_host: usize) -> Lab {
        assert!(
            hosts >= 1 && addresses_per_host >= 1 && hosts * addresses_per_host <= MAX_ADDRESSES,
            "a lab holds 1 to {MAX_ADDRESSES} addresses"
        );
        let n = LABS.fetch_add(1, Ordering::Relaxed) % 256;
        let tag = format!("{:x}-{n:x}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("stratus-lab-")
            .tempdir()
            .expect("lab tempdir");
        // Searchable by program users (`nobody` on a host), who reach their servers' dirs
        // below the remote directory by absolute path.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod lab dir");
        let subnet = claim_subnet();
        let mut lab = Lab {
            dir,
            subnet,
            bridge: format!("sb{tag}"),
            hosts: Vec::new(),
            with_sshd: false,
        };
        std::fs::create_dir(lab.remote_dir()).expect("remote dir mount point");
        lab.make_bridge();
        for i in 0..hosts {
            let first = 2 + i * addresses_per_host;
            let addresses = (first..first + addresses_per_host)
                .map(|last| lab.address(last as u8))
                .collect();
            lab.hosts.push(Host {
                netns: format!("sn{tag}-{i}"),
                veth: format!("sv{tag}-{i}"),
                addresses,
                sshd: None,
            });
            lab.make_host(i);
        }
        lab
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.subnet, last)
    }

    /// The control plane's address: the bridge's, in the root namespace.
    pub fn control_address(&self) -> Ipv4Addr {
        self.address(1)
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Host `i`'s addresses, its first one also its SSH address.
    pub fn host_addresses(&self, i: usize) -> &[Ipv4Addr] {
        &self.hosts[i].addresses
    }

    /// Every address of every host, host by host.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.hosts
            .iter()
            .flat_map(|h| h.addresses.clone())
            .collect()
    }

    /// Which host holds `address`.
    pub fn host_of(&self, address: &str) -> Option<usize> {
        let address: Ipv4Addr = address.parse().ok()?;
        self.hosts
            .iter()
            .position(|h| h.addresses.contains(&address))
    }

    /// Host `i`'s network namespace (`ip netns` name).
    pub fn netns(&self, i: usize) -> &str {
        &self.hosts[i].netns
    }

    /// The directory each host sees as its own tmpfs (empty in the root namespace).
    pub fn remote_dir(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// The client's private key (OpenSSH format), authorized on every host.
    pub fn client_key(&self) -> String {
        std::fs::read_to_string(self.client_key_path()).expect("client key")
    }

    /// Keeps the client key as `name` in the key management of the state directory `state`
    /// (0600 in a 0700 directory), as an operator stores it.
    pub fn keep_client_key(&self, state: &Path, name: &str) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let keys = state.join("keys");
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&keys);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(keys.join(name))?;
        file.write_all(self.client_key().as_bytes())
    }

    /// A `[providers.lab]` table of `type = "ssh"` over every address of the lab, reached with
    /// the client key kept as `key`, and `extra` lines.
    pub fn provider_table(&self, key: &str, extra: &str) -> String {
        let hosts: Vec<String> = self
            .addresses()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        format!(
            "\n[providers.lab]\ntype = \"ssh\"\nhosts = [{}]\nidentity-key = \"{key}\"\n\
             known-hosts = \"{}\"\nremote-dir = \"{}\"\nconnect-timeout = 2\n{extra}",
            hosts.join(", "),
            self.known_hosts().display(),
            self.remote_dir().display()
        )
    }

    /// A known_hosts file pinning every host's key at every address of that host.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A scratch directory of the lab's (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program` run in host `i`'s network namespace (the root namespace's filesystem).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].netns, program]);
        c
    }

    /// `args` run on host `i` as its sshd's sessions run: in its network, mount and UTS
    /// namespaces (so the remote directory is that host's).
    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        let pid = self.sshd_pid(i).to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-n", "-u", "--"])
            .args(args)
            .output()
            .expect("nsenter")
    }

    /// `command` run on host `i` through the real ssh client with the lab's key.
    pub fn ssh(&self, i: usize, command: &str) -> Output {
        Command::new("ssh")
            .args(self.ssh_options())
            .arg(format!("root@{}", self.hosts[i].addresses[0]))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("ssh")
    }

    fn ssh_options(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.client_key_path().display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
        ]
    }

    /// Every file, directory and link under the remote directory as host `i` sees it.
    pub fn remote_entries(&self, i: usize) -> Vec<String> {
        let remote = self.remote_dir().display().to_string();
        let out = self.run(i, &["find", &remote, "-mindepth", "1"]);
        assert!(out.status.success(), "find on host {i}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Every process in host `i`'s network namespace but its sshd listener: what Stratus
    /// started there (agents, services) and live ssh sessions.
    pub fn processes(&self, i: usize) -> Vec<(u32, String)> {
        let sshd = self.hosts[i].sshd.as_ref().map(|c| c.id());
        netns_pids(&self.hosts[i].netns)
            .into_iter()
            .filter(|p| Some(*p) != sshd)
            .map(|p| (p, cmdline(p)))
            .filter(|(_, c)| !c.is_empty())
            .collect()
    }

    /// Host `i` unreachable: its veth's bridge end down, so packets to and from it vanish.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "down"]);
    }

    /// Host `i` reachable again.
    pub fn restore(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "up"]);
    }

    /// Host `i`'s sshd listener.
    pub fn sshd_pid(&self, i: usize) -> u32 {
        self.hosts[i]
            .sshd
            .as_ref()
            .expect("this lab runs no sshd")
            .id()
    }

    fn make_bridge(&self) {
        ip(&["link", "add", &self.bridge, "type", "bridge"]);
        let cidr = format!("{}/24", self.control_address());
        ip(&["addr", "add", &cidr, "dev", &self.bridge]);
        ip(&["link", "set", &self.bridge, "up"]);
    }

    fn make_host(&self, i: usize) {
        let h = &self.hosts[i];
        ip(&["netns", "add", &h.netns]);
        ip(&[
            "link", "add", &h.veth, "type", "veth", "peer", "name", "eth0", "netns", &h.netns,
        ]);
        ip(&["link", "set", &h.veth, "master", &self.bridge, "up"]);
        ip(&["-n", &h.netns, "link", "set", "lo", "up"]);
        for a in &h.addresses {
            ip(&[
                "-n",
                &h.netns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "eth0",
            ]);
        }
        ip(&["-n", &h.netns, "link", "set", "eth0", "up"]);
    }

    fn make_keys(&self) {
        keygen(&self.client_key_path(), "stratus-lab-client");
        std::fs::copy(
            self.dir.path().join("client.pub"),
            self.dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        for i in 0..self.hosts.len() {
            keygen(&self.host_key(i), &format!("stratus-lab-host-{i}"));
        }
    }

    fn host_key(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("host{i}_key"))
    }

    fn write_known_hosts(&self) {
        let mut text = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let public = std::fs::read_to_string(self.host_key(i).with_extension("pub"))
                .expect("host public key");
            let public: Vec<&str> = public.split_whitespace().take(2).collect();
            for a in &h.addresses {
                text.push_str(&format!("{a} {}\n", public.join(" ")));
            }
        }
        std::fs::write(self.known_hosts(), text).expect("known_hosts");
    }

    /// Starts host `i`'s sshd: `ip netns exec`, `unshare` and `sh` all exec, so the child's
    /// pid is the listener's.
    fn start_sshd(&mut self, i: usize) {
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let remote = self.remote_dir().display().to_string();
        let script = "mount -t tmpfs -o mode=0755,size=\"$3\" stratus-lab \"$1\" && hostname \"$2\" \
                      && shift 3 && exec \"$@\"";
        let log = File::create(self.dir.path().join(format!("sshd{i}.log"))).expect("sshd log");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].netns])
            .args(["unshare", "-m", "-u", "--propagation", "private"])
            .args([
                "sh",
                "-c",
                script,
                "sh",
                &remote,
                &format!("lab-host-{i}"),
                REMOTE_TMPFS_SIZE,
            ])
            .arg("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", "/dev/null"]);
        let options = [
            "ListenAddress=0.0.0.0".to_string(),
            "Port=22".to_string(),
            format!("HostKey={}", self.host_key(i).display()),
            format!(
                "AuthorizedKeysFile={}",
                self.dir.path().join("authorized_keys").display()
            ),
            "StrictModes=no".to_string(),
            "PidFile=none".to_string(),
            "PermitRootLogin=prohibit-password".to_string(),
            "PasswordAuthentication=no".to_string(),
            // A session whose client vanished while its host was cut gets no FIN it can
            // see once the host is back; without probes it would last the kernel's two-hour
            // keepalive. A live client answers these, so no session of Stratus's is ended.
            "ClientAliveInterval=2".to_string(),
            "ClientAliveCountMax=3".to_string(),
        ];
        for o in &options {
            c.args(["-o", o]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.hosts[i].sshd = Some(child);
    }

    fn wait_listening(&mut self, i: usize) {
        let target = (self.hosts[i].addresses[0], 22);
        let start = Instant::now();
        while TcpStream::connect_timeout(&target.into(), Duration::from_millis(500)).is_err() {
            let exited = self.hosts[i].sshd.as_mut().unwrap().try_wait().unwrap();
            let log = self.dir.path().join(format!("sshd{i}.log"));
            assert!(
                exited.is_none() && start.elapsed() < SSHD_START_LIMIT,
                "sshd of host {i} is not listening ({exited:?}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs every process in host `i`'s namespace until none is left.
    fn end_processes(&mut self, i: usize) {
        let start = Instant::now();
        loop {
            let pids = netns_pids(&self.hosts[i].netns);
            if pids.is_empty() || start.elapsed() > END_LIMIT {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(child) = self.hosts[i].sshd.as_mut() {
                let _ = child.try_wait();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut child) = self.hosts[i].sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.end_processes(i);
            let _ = quiet_ip(&["netns", "del", &self.hosts[i].netns]);
            let _ = quiet_ip(&["link", "del", &self.hosts[i].veth]);
        }
        let _ = quiet_ip(&["link", "del", &self.bridge]);
        let _ = std::fs::remove_file(claim_path(self.subnet));
    }
}

/// Claims a free `k` for `10.231.<k>.0/24`: a claim file created exclusively, taken over only
/// from a process that is gone, and no address of the subnet on a link of the root namespace.
fn claim_subnet() -> u8 {
    std::fs::create_dir_all(CLAIMS_DIR).expect("claims dir");
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_dead_labs);
    let n = LABS.load(Ordering::Relaxed);
    let start = (std::process::id() + n * 37) % 250;
    for offset in 0..250 {
        let k = ((start + offset) % 250 + 2) as u8;
        if try_claim(k) {
            let prefix = format!(" {}.{}.{k}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
            let used = String::from_utf8_lossy(&ip(&["-o", "addr"]).stdout).contains(&prefix);
            if !used {
                return k;
            }
            let _ = std::fs::remove_file(claim_path(k));
        }
    }
    panic!("no free 10.231.k.0/24 subnet for a lab (claims in {CLAIMS_DIR})");
}

/// Removes what labs of test processes that died without dropping them (killed, aborted)
/// left: every namespace and link named after a dead claimant's pid, after killing the
/// processes in those namespaces (its sshd and whatever ran on its hosts), and the claim.
fn sweep_dead_labs() {
    let claims = std::fs::read_dir(CLAIMS_DIR)
        .into_iter()
        .flatten()
        .flatten();
    for claim in claims {
        let holder = std::fs::read_to_string(claim.path()).unwrap_or_default();
        let Ok(pid) = holder.trim().parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let netns_prefix = format!("sn{pid:x}-");
        let spaces = String::from_utf8_lossy(&quiet_ip(&["netns", "list"]).stdout).into_owned();
        for ns in spaces.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&netns_prefix) {
                for p in netns_pids(ns) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = quiet_ip(&["netns", "del", ns]);
            }
        }
        let links = String::from_utf8_lossy(&quiet_ip(&["-o", "link"]).stdout).into_owned();
        for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = link.split('@').next().unwrap_or(link);
            if name.starts_with(&format!("sb{pid:x}-")) || name.starts_with(&format!("sv{pid:x}-"))
            {
                let _ = quiet_ip(&["link", "del", name]);
            }
        }
        let _ = std::fs::remove_file(claim.path());
    }
}

fn claim_path(k: u8) -> PathBuf {
    Path::new(CLAIMS_DIR).join(k.to_string())
}

fn try_claim(k: u8) -> bool {
    let path = claim_path(k);
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let live = holder
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if live || holder.is_empty() {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    false
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// `ip ARGS`, insisting on success.
fn ip(args: &[&str]) -> Output {
    let out = quiet_ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn quiet_ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// Every process in network namespace `netns`.
pub fn netns_pids(netns: &str) -> Vec<u32> {
    let out = quiet_ip(&["netns", "pids", netns]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Which of the namespaces `netns` and root-namespace links `links` still exist.
pub fn leftovers(netns: &[String], links: &[String]) -> Vec<String> {
    let spaces = String::from_utf8_lossy(&quiet_ip(&["netns", "list"]).stdout).into_owned();
    let all_links = String::from_utf8_lossy(&quiet_ip(&["-o", "link"]).stdout).into_owned();
    let mut left = Vec::new();
    for n in netns {
        if spaces.split_whitespace().any(|w| w == n) {
            left.push(format!("netns {n}"));
        }
    }
    for l in links {
        if all_links.contains(&format!(": {l}:")) || all_links.contains(&format!(": {l}@")) {
            left.push(format!("link {l}"));
        }
    }
    left
}

impl Lab {
    /// The names of every namespace and root-namespace link this lab made (for checking that
    /// `Drop` removed them).
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let netns = self.hosts.iter().map(|h| h.netns.clone()).collect();
        let mut links: Vec<String> = self.hosts.iter().map(|h| h.veth.clone()).collect();
        links.push(self.bridge.clone());
        (netns, links)
    }

    /// The pids of the sshd listeners.
    pub fn sshd_pids(&self) -> Vec<u32> {
        self.hosts
            .iter()
            .filter_map(|h| h.sshd.as_ref().map(|c| c.id()))
            .collect()
    }

    /// Whether this lab runs sshd on its hosts.
    pub fn has_sshd(&self) -> bool {
        self.with_sshd
    }
}
