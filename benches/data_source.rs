//! Data source benchmark (a bench binary, not a timed test): how fast the mariadb plugin's
//! `install-data-source` loads a large SQL dump through `host.run-with-files`, against
//! `mariadb < dump` run directly, into fresh databases of the same real `mariadbd`.
//!
//! The plugin runs in the plugin runtime with one shared supervisor, as an agent runs it: the
//! service is installed, configured and started without a data source, then each run calls
//! `install-data-source` for a new database (the plugin recreates it and the `mariadb` client
//! reads the dump from the file the host opened) and times the whole hook call; the direct
//! load runs the same client with the same login and socket, stdin redirected from the dump,
//! into another new database. Runs alternate which goes first, so the page cache and the
//! server's warm-up favour neither; every load's row count is checked. The package is a copy
//! whose `timeout-ms` is one hour, so a slow machine measures instead of timing out.
//!
//! Run: `cargo bench --bench data_source -- [--mb N] [--runs N]` (default 1024 MB, 2 runs).

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_model::context::{DataSource, HookCall, Port, ServerInfo, ServiceContext};
use stratus_plugin_runtime::{
    CallEnv, Labels, Package, Plugin, Runtime, RuntimeConfig, Supervisor, dirs_of,
};

const MARIADBD: &str = "/usr/sbin/mariadbd";
const CLIENT: &str = "/usr/bin/mariadb";
const DB_ADDR: Ipv4Addr = Ipv4Addr::new(127, 78, 0, 1);
/// Rows per INSERT statement, as `mariadb-dump --extended-insert` writes them.
const ROWS_PER_STATEMENT: u64 = 1000;

struct Args {
    mb: u64,
    runs: u32,
}

fn args() -> Args {
    let mut a = Args { mb: 1024, runs: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--mb" => a.mb = num().expect("--mb N"),
            "--runs" => a.runs = num().expect("--runs N") as u32,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Writes a dump of about `mb` MiB into table `big`; returns its rows.
fn generate(path: &Path, mb: u64) -> u64 {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "CREATE TABLE big (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, payload VARCHAR(200) NOT NULL);"
    )
    .unwrap();
    let (mut written, mut rows) = (0u64, 0u64);
    while written < mb << 20 {
        let mut stmt = String::with_capacity(160 * ROWS_PER_STATEMENT as usize);
        stmt.push_str("INSERT INTO big (id, n, payload) VALUES\n");
        for i in 0..ROWS_PER_STATEMENT {
            rows += 1;
            let sep = if i + 1 == ROWS_PER_STATEMENT {
                ";"
            } else {
                ","
            };
            let h = rows.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            stmt.push_str(&format!(
                "({rows}, {}, 'generated row {rows} of the benchmark data source {h:0>32x}'){sep}\n",
                h >> 17
            ));
        }
        written += stmt.len() as u64;
        f.write_all(stmt.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    rows
}

/// The mariadb package with a one-hour `timeout-ms`, in `dir`.
fn package_copy(dir: &Path) -> PathBuf {
    let src = stratus_plugin_artifacts::package_dir("mariadb");
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    std::fs::copy(src.join("plugin.wasm"), dir.join("plugin.wasm")).unwrap();
    for e in std::fs::read_dir(src.join("cfg")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("cfg").join(e.file_name())).unwrap();
    }
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| match l.starts_with("timeout-ms") {
            true => "timeout-ms = 3600000".to_string(),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    dir.to_path_buf()
}

fn context(service_dir: &Path, port: u16, database: Option<&str>) -> ServiceContext {
    ServiceContext {
        deployment: "bench".into(),
        tier: "db".into(),
        server: ServerInfo {
            id: "db-1".into(),
            name: "bench-db-1".into(),
            address: DB_ADDR.to_string(),
        },
        service_id: "1".into(),
        service_name: "db".into(),
        service_dir: service_dir.to_str().unwrap().into(),
        settings: Vec::new(),
        ports: vec![Port {
            name: "mysql".into(),
            private_port: port,
            public_port: port,
        }],
        credentials: Vec::new(),
        data_source: database.map(|d| DataSource {
            database: d.into(),
            image_path: service_dir.join("datasource.sql").to_str().unwrap().into(),
        }),
        dependencies: Vec::new(),
    }
}

struct Db {
    plugin: Plugin,
    supervisor: Supervisor,
    dir: PathBuf,
    port: u16,
}

impl Db {
    async fn call(&self, call: HookCall) -> Result<(), String> {
        let env = CallEnv {
            sealed_package: None,
            dirs: dirs_of(&call),
            server_address: DB_ADDR.to_string(),
            supervisor: self.supervisor.clone(),
            capabilities: None,
            secrets: call.secrets(),
            labels: Labels::of(&call),
        };
        self.plugin
            .call(&call, &env)
            .await
            .map(drop)
            .map_err(|f| format!("{}; logs: {:?}", f.kind, f.logs))
    }

    fn ctx(&self, database: Option<&str>) -> ServiceContext {
        context(&self.dir, self.port, database)
    }

    /// The admin's client over the server's socket, into `database`.
    fn client(&self, database: &str) -> std::process::Command {
        let mut c = std::process::Command::new(CLIENT);
        c.arg(format!(
            "--defaults-file={}",
            self.dir.join("private/admin.cnf").display()
        ))
        .arg(format!(
            "--socket={}",
            self.dir.join("private/mariadb.sock").display()
        ))
        .args(["--batch", "--skip-column-names", database]);
        c
    }

    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = self.client("mysql").args(["-e", sql]).output().unwrap();
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(format!("{sql}: {}", String::from_utf8_lossy(&out.stderr))),
        }
    }

    fn rows(&self, database: &str) -> Result<u64, String> {
        let n = self.sql(&format!("SELECT COUNT(*) FROM `{database}`.big"))?;
        n.parse().map_err(|_| format!("count: {n}"))
    }

    /// `install-data-source` into `database`: seconds.
    async fn ours(&self, database: &str) -> Result<f64, String> {
        let t = Instant::now();
        let ctx = self.ctx(Some(database));
        self.call(HookCall::InstallDataSource { ctx }).await?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// `mariadb <database> < dump` into a new database: seconds.
    fn direct(&self, database: &str, dump: &Path) -> Result<f64, String> {
        self.sql(&format!("CREATE DATABASE `{database}`"))?;
        let t = Instant::now();
        let out = self
            .client(database)
            .stdin(std::fs::File::open(dump).unwrap())
            .output()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        match out.status.success() {
            true => Ok(secs),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind((DB_ADDR, 0)).unwrap();
    l.local_addr().unwrap().port()
}

async fn bench(a: &Args, db: &Db) -> Result<(), String> {
    let dump = db.dir.join("datasource.sql");
    let t = Instant::now();
    let rows = generate(&dump, a.mb);
    let size = std::fs::metadata(&dump).unwrap().len();
    let mb = size as f64 / (1 << 20) as f64;
    println!(
        "dump: {mb:.0} MiB, {rows} rows, generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    db.call(HookCall::InstallService { ctx: db.ctx(None) })
        .await?;
    // Without a data source: the data directory only, then the real server.
    db.call(HookCall::InstallDataSource { ctx: db.ctx(None) })
        .await?;
    db.call(HookCall::Configure { ctx: db.ctx(None) }).await?;
    db.call(HookCall::Start { ctx: db.ctx(None) }).await?;
    let mut ratios = Vec::new();
    for run in 1..=a.runs {
        let (ours_db, direct_db) = (format!("ours{run}"), format!("direct{run}"));
        let before = common::load_average();
        let (ours, direct) = if run % 2 == 1 {
            let o = db.ours(&ours_db).await?;
            (o, db.direct(&direct_db, &dump)?)
        } else {
            let d = db.direct(&direct_db, &dump)?;
            (db.ours(&ours_db).await?, d)
        };
        for d in [&ours_db, &direct_db] {
            let got = db.rows(d)?;
            if got != rows {
                return Err(format!("{d} holds {got} rows, not {rows}"));
            }
        }
        let ratio = direct / ours;
        ratios.push(ratio);
        println!(
            "run {run} ({} first): install-data-source {ours:.1} s ({:.1} MiB/s), \
             mariadb < dump {direct:.1} s ({:.1} MiB/s), ours/direct throughput {ratio:.3}; \
             load average {before} -> {}",
            if run % 2 == 1 { "ours" } else { "direct" },
            mb / ours,
            mb / direct,
            common::load_average()
        );
        for d in [&ours_db, &direct_db] {
            db.sql(&format!("DROP DATABASE `{d}`"))?;
        }
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
    println!("ours/direct throughput: median {median:.3} over {n} runs");
    let _ = db.call(HookCall::Stop { ctx: db.ctx(None) }).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if !Path::new(MARIADBD).exists() {
        println!("skipping: {MARIADBD} is not installed");
        return;
    }
    // /tmp keeps the unix socket path well under the kernel's 108-byte limit.
    let root = tempfile::Builder::new()
        .prefix("mdb-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let pkg = package_copy(&root.path().join("pkg"));
    let dir = root.path().join("a1");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(pkg.join("cfg")).unwrap() {
        let e = e.unwrap();
        std::fs::create_dir_all(dir.join("cfg")).unwrap();
        std::fs::copy(e.path(), dir.join("cfg").join(e.file_name())).unwrap();
    }
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        cache_key: [5u8; 32],
        max_concurrent_calls: 2,
        max_component_bytes: stratus_plugin_runtime::DEFAULT_MAX_COMPONENT_BYTES,
    })
    .unwrap();
    let plugin = runtime.load(&Package::open(&pkg).unwrap()).await.unwrap();
    let db = Db {
        plugin,
        supervisor: Supervisor::new(root.path().join("logs")),
        dir,
        port: free_port(),
    };
    let result = bench(&a, &db).await;
    db.supervisor.stop_all(Duration::from_secs(30)).await;
    if let Err(e) = result {
        eprintln!("data_source bench failed: {e}");
        std::process::exit(1);
    }
}
