//! The mariadb plugin against a real MariaDB: every hook in lifecycle order through the plugin
//! runtime with one shared supervisor (as an agent does; `stratus plugin call` stops its
//! processes after each call), checked with the real `mariadb` client. Grants are proved by
//! connecting from a granted and a non-granted loopback address through a small relay that
//! binds its outgoing connection to the chosen source address. A real launch through the
//! `stratus` binary proves a data source far over what a plugin could hold in memory travels
//! the whole way (cloud files, the server, `install-data-source` through `run-with-files`).

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_model::context::{
    DataSource, DatabaseGrant, HealthReport, HealthStatus, HookCall, Port, ServerInfo,
    ServiceContext,
};
use stratus_plugin_runtime::{
    CallEnv, CallFailure, HookOutcome, HookValue, Labels, Package, Plugin, ProcessState, Runtime,
    RuntimeConfig, Supervisor, dirs_of,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::process::Command;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const DB_ADDR: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
const APP_A: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 2);
const APP_B: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 3);
/// Quotes, backslashes and SQL in the password: granting must neither fail nor run it.
const PASSWORD: &str = r#"pw'; DROP DATABASE shop; -- \'" x"#;

/// Stops every process the test's supervisor started, also when an assertion fails.
struct StopOnDrop(Supervisor);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let sup = self.0.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(sup.stop_all(Duration::from_secs(20)))
        });
    }
}

struct Db {
    plugin: Plugin,
    supervisor: Supervisor,
    ctx: ServiceContext,
    port: u16,
}

impl Db {
    fn env(&self, call: &HookCall) -> CallEnv {
        CallEnv {
            sealed_package: None,
            dirs: dirs_of(call),
            server_address: DB_ADDR.to_string(),
            supervisor: self.supervisor.clone(),
            capabilities: None,
            secrets: call.secrets(),
            labels: Labels::of(call),
        }
    }

    async fn try_call(&self, call: HookCall) -> Result<HookOutcome, CallFailure> {
        self.plugin.call(&call, &self.env(&call)).await
    }

    async fn call(&self, call: HookCall) -> HookOutcome {
        let name = format!("{call:?}")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        match self.try_call(call).await {
            Ok(o) => o,
            Err(f) => panic!("{name} failed: {}\nlogs: {:?}", f.kind, f.logs),
        }
    }

    async fn health(&self) -> HealthReport {
        let out = self
            .call(HookCall::HealthCheck {
                ctx: self.ctx.clone(),
            })
            .await;
        match out.value {
            HookValue::Health(h) => h,
            other => panic!("health-check returned {other:?}"),
        }
    }

    fn grant(&self, addresses: &[Ipv4Addr]) -> Vec<DatabaseGrant> {
        vec![DatabaseGrant {
            service: "app".into(),
            database: "shop".into(),
            user: "app".into(),
            password: PASSWORD.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }]
    }

    fn pid(&self) -> Option<u32> {
        match self.supervisor.state(&self.ctx.service_name, "mariadbd") {
            ProcessState::Running(pid) => Some(pid),
            _ => None,
        }
    }

    /// Runs SQL as the server's admin (the plugin's generated login) over its socket and
    /// returns the rows.
    async fn root_sql(&self, sql: &str) -> String {
        let login = format!("--defaults-file={}/private/admin.cnf", self.ctx.service_dir);
        let socket = format!("--socket={}/private/mariadb.sock", self.ctx.service_dir);
        let out = Command::new("/usr/bin/mariadb")
            .args([login.as_str(), &socket, "--batch", "--skip-column-names"])
            .args(["-e", sql])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Connects as `app` from `source` over TCP and reads the greetings.
    async fn app_query(&self, source: Ipv4Addr, password: &str) -> Result<String, String> {
        let relay = relay_from(source, SocketAddr::from((DB_ADDR, self.port))).await;
        let out = Command::new("/usr/bin/mariadb")
            .args(["--no-defaults", "--protocol=TCP", "-h127.0.0.1"])
            .arg(format!("-P{relay}"))
            .args([
                "-uapp",
                "--batch",
                "--skip-column-names",
                "--connect-timeout=5",
            ])
            .args(["-e", "SELECT id, message FROM shop.greetings ORDER BY id"])
            // The password goes through the environment, never argv or output.
            .env("MYSQL_PWD", password)
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// A loopback listener whose connections are forwarded to `to` from the source address
/// `source`, so the server sees the client as `source`. Returns the listener's port.
async fn relay_from(source: Ipv4Addr, to: SocketAddr) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // One client connection per relay is all a query needs.
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((source, 0))).unwrap();
        if let Ok(mut upstream) = sock.connect(to).await {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    port
}

fn free_port(addr: Ipv4Addr) -> u16 {
    let l = std::net::TcpListener::bind((addr, 0)).unwrap();
    l.local_addr().unwrap().port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn context(service_dir: &Path, port: u16) -> ServiceContext {
    ServiceContext {
        deployment: "shop".into(),
        tier: "db".into(),
        server: ServerInfo {
            id: "db-1".into(),
            name: "shop-db-1".into(),
            address: DB_ADDR.to_string(),
        },
        service_id: "3".into(),
        service_name: "db".into(),
        service_dir: service_dir.to_str().unwrap().into(),
        settings: Vec::new(),
        ports: vec![Port {
            name: "mysql".into(),
            private_port: port,
            public_port: port,
        }],
        credentials: Vec::new(),
        data_source: Some(DataSource {
            database: "shop".into(),
            image_path: service_dir.join("datasource.sql").to_str().unwrap().into(),
        }),
        dependencies: Vec::new(),
    }
}

async fn setup(root: &Path) -> Db {
    let package = stratus_plugin_artifacts::package_dir("mariadb");
    let service_dir: PathBuf = root.join("a3");
    // install-service's input: the unpacked package's templates and the fetched image.
    copy_dir(&package.join("cfg"), &service_dir.join("cfg"));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-tier/datasource.sql");
    std::fs::copy(example, service_dir.join("datasource.sql")).unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        cache_key: [3u8; 32],
        max_concurrent_calls: 2,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })
    .unwrap();
    let plugin = runtime
        .load(&Package::open(&package).unwrap())
        .await
        .unwrap();
    let port = free_port(DB_ADDR);
    Db {
        plugin,
        supervisor: Supervisor::new(root.join("supervisor-logs")),
        ctx: context(&service_dir, port),
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_serves_the_data_source_to_exactly_the_granted_addresses() {
    if !Path::new(MARIADBD).exists() {
        eprintln!("skipping: {MARIADBD} is not installed");
        return;
    }
    // /tmp keeps the unix socket path well under the kernel's 108-byte limit.
    let root = tempfile::Builder::new()
        .prefix("mdb-")
        .tempdir_in("/tmp")
        .unwrap();
    let db = setup(root.path()).await;
    let _guard = StopOnDrop(db.supervisor.clone());
    let ctx = || db.ctx.clone();

    db.call(HookCall::InstallService { ctx: ctx() }).await;
    let t = Instant::now();
    db.call(HookCall::InstallDataSource { ctx: ctx() }).await;
    eprintln!("install-data-source: {} ms", t.elapsed().as_millis());
    assert_eq!(db.pid(), None, "the temporary server must be stopped again");
    // A second run must neither fail nor load the rows twice.
    db.call(HookCall::InstallDataSource { ctx: ctx() }).await;

    db.call(HookCall::Configure { ctx: ctx() }).await;
    let cnf = std::fs::read_to_string(Path::new(&db.ctx.service_dir).join("my.cnf")).unwrap();
    assert!(cnf.contains(&format!("bind-address = {DB_ADDR}")), "{cnf}");
    assert!(cnf.contains(&format!("port = {}", db.port)), "{cnf}");

    let t = Instant::now();
    db.call(HookCall::Start { ctx: ctx() }).await;
    eprintln!("start: {} ms", t.elapsed().as_millis());
    let pid = db.pid().expect("mariadbd runs after start");
    db.call(HookCall::Start { ctx: ctx() }).await;
    assert_eq!(db.pid(), Some(pid), "start of a running server keeps it");
    assert_eq!(
        db.root_sql("SELECT COUNT(*) FROM shop.greetings")
            .await
            .trim(),
        "3"
    );

    let health = db.health().await;
    assert_eq!(health.status, HealthStatus::Ok, "{}", health.message);

    // Before any grant nobody gets in over TCP.
    assert!(db.app_query(APP_A, PASSWORD).await.is_err());

    let grants = db.grant(&[APP_A]);
    for _ in 0..2 {
        db.call(HookCall::GrantDatabaseAccess {
            ctx: ctx(),
            grants: grants.clone(),
        })
        .await;
    }
    let rows = db
        .app_query(APP_A, PASSWORD)
        .await
        .expect("granted address connects");
    assert_eq!(rows.lines().count(), 3, "{rows}");
    assert!(
        rows.starts_with("1\tHello from the database tier"),
        "{rows}"
    );
    let b = db
        .app_query(APP_B, PASSWORD)
        .await
        .expect_err("B was not granted");
    assert!(b.contains("1130") && b.contains(&APP_B.to_string()), "{b}");
    let wrong = db
        .app_query(APP_A, "not-the-password")
        .await
        .expect_err("wrong password");
    assert!(wrong.contains("1045"), "{wrong}");
    // The hostile password was a literal, not SQL.
    assert_eq!(
        db.root_sql("SHOW DATABASES LIKE 'shop'").await.trim(),
        "shop"
    );

    db.call(HookCall::RevokeDatabaseAccess {
        ctx: ctx(),
        grants: grants.clone(),
    })
    .await;
    let revoked = db.app_query(APP_A, PASSWORD).await.expect_err("revoked");
    assert!(revoked.contains("1130"), "{revoked}");

    // A hostile user name is refused before any SQL runs.
    let mut hostile = db.grant(&[APP_A]);
    hostile[0].user = "x'@'%' IDENTIFIED BY 'y".into();
    let err = db
        .try_call(HookCall::GrantDatabaseAccess {
            ctx: ctx(),
            grants: hostile,
        })
        .await
        .expect_err("hostile user name");
    assert!(err.kind.to_string().contains("user name"), "{}", err.kind);
    assert_eq!(
        db.root_sql("SELECT COUNT(*) FROM mysql.user WHERE user LIKE 'x%'")
            .await
            .trim(),
        "0"
    );

    db.call(HookCall::Stop { ctx: ctx() }).await;
    assert_eq!(db.pid(), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "mariadbd {pid} is gone"
    );
    db.call(HookCall::Stop { ctx: ctx() }).await;
    let health = db.health().await;
    assert_eq!(health.status, HealthStatus::Critical, "{}", health.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_names_mariadbds_own_error_when_the_port_is_taken() {
    if !Path::new(MARIADBD).exists() {
        eprintln!("skipping: {MARIADBD} is not installed");
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("mdb-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut db = setup(root.path()).await;
    let _guard = StopOnDrop(db.supervisor.clone());
    // A listener of our own holds the port, so mariadbd's bind fails.
    let taken = std::net::TcpListener::bind((DB_ADDR, 0)).unwrap();
    db.port = taken.local_addr().unwrap().port();
    db.ctx = context(Path::new(&db.ctx.service_dir), db.port);
    db.ctx.data_source = None;

    db.call(HookCall::Configure {
        ctx: db.ctx.clone(),
    })
    .await;
    let err = db
        .try_call(HookCall::Start {
            ctx: db.ctx.clone(),
        })
        .await
        .expect_err("the port is taken");
    let text = err.kind.to_string();
    assert!(
        text.contains("mariadbd.err") && text.contains("[ERROR]"),
        "{text}"
    );
    assert!(text.contains("Bind on TCP/IP port"), "{text}");
    assert_eq!(db.pid(), None);
}

/// Writes a data source of about `bytes` bytes filling table `big`: statements of 1,000 rows,
/// each row's payload derived from its id. Returns the number of rows.
fn big_data_source(path: &Path, bytes: usize) -> u64 {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(200) NOT NULL);"
    )
    .unwrap();
    let (mut written, mut rows) = (0usize, 0u64);
    while written < bytes {
        let mut stmt = String::from("INSERT INTO big (id, payload) VALUES\n");
        for i in 0..1000 {
            let id = rows + 1;
            let sep = if i == 999 { ";" } else { "," };
            stmt.push_str(&format!(
                "({id}, 'row {id:>10} of the generated data source {:0>64x}'){sep}\n",
                id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ));
            rows += 1;
        }
        written += stmt.len();
        f.write_all(stmt.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    rows
}

#[test]
fn a_40_mb_data_source_loads_every_row_in_a_real_launch() {
    if !Path::new(MARIADBD).exists() {
        eprintln!("skipping: {MARIADBD} is not installed");
        return;
    }
    let st = common::Stratus::new();
    let sql = st.dir().join("big.sql");
    let rows = big_data_source(&sql, 40 << 20);
    let size = std::fs::metadata(&sql).unwrap().len();
    assert!(size > 40 << 20, "{size}");
    let package = stratus_plugin_artifacts::package_dir("mariadb");
    let text = format!(
        "[deployment]\nname = \"bigds\"\n\n[tiers.db]\nmin = 1\nmax = 1\nservices = [\"mysql\"]\n\n\
         [services.mysql]\npackage = \"{}\"\nports = {{ mysql = 3306 }}\n\
         data-source = {{ image = \"{}\", database = \"shop\" }}\n",
        package.display(),
        sql.display()
    );
    let file = st.write_file("bigds.toml", &text);
    st.ok(&["launch", file.to_str().unwrap()]);
    let d = st.deployment("bigds");
    assert_eq!(d["state"], "RUNNING", "{d}");

    let server = common::servers(&d, "db")[0].clone();
    let id = server["services"][0]["id"].as_str().unwrap().to_string();
    let dir = common::server_root(&st, "bigds", &server)
        .join("mnt/services")
        .join(id);
    let out = std::process::Command::new("/usr/bin/mariadb")
        .arg(format!(
            "--defaults-file={}",
            dir.join("private/admin.cnf").display()
        ))
        .arg(format!(
            "--socket={}",
            dir.join("private/mariadb.sock").display()
        ))
        .args(["--batch", "--skip-column-names", "shop", "-e"])
        .arg("SELECT COUNT(*), SUM(id), MAX(payload) FROM big")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = got.trim_end().split('\t').collect();
    assert_eq!(
        fields[..2],
        [rows.to_string(), (rows * (rows + 1) / 2).to_string()],
        "{got}"
    );
    assert!(fields[2].starts_with(&format!("row {rows:>10} ")), "{got}");
    common::terminate(&st, "bigds");
}
