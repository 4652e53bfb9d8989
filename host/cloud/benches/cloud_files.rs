//! Cloud files benchmark (a bench binary, not a timed test): bytes and time to ship the hello
//! example's packages and data sources to its four servers, and a larger data source, over
//! the HTTPS file endpoint (what agents do now) against the shared-disk path it replaced
//! (`CloudFiles::local(<control plane dir>)` opened by the agent), side by side in one run.
//!
//! The endpoint runs on loopback with a real TLS identity; a counting relay in front of it
//! measures the bytes on the wire (TLS records, HTTP heads, both ways). Runs alternate which
//! path goes first, so the page cache favours neither.
//!
//! Run: `cargo bench -p stratus-cloud --bench cloud_files -- [--mb N] [--runs N]` (default
//! 50 MB, 5 runs).

use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use stratus_cloud::{
    AgentIdentity, Authorize, Beneath, CloudFiles, Expected, FileEndpoint, FileRef, PackageRef,
    RemoteFiles, Secret,
};
use tokio::net::{TcpListener, TcpStream};

struct Anyone;

impl Authorize for Anyone {
    fn verify<'a>(&'a self, _: &'a str, _: &'a str, _: &'a Secret) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }
}

/// A loopback relay to `target` that counts the bytes it carries, both ways.
async fn relay(target: std::net::SocketAddr, counted: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut a, _) = listener.accept().await.unwrap();
            let _ = a.set_nodelay(true);
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut b = TcpStream::connect(target).await.unwrap();
                let _ = b.set_nodelay(true);
                if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                    counted.fetch_add(up + down, Ordering::Relaxed);
                }
            });
        }
    });
    addr
}

fn args() -> (u64, u32) {
    let (mut mb, mut runs) = (50, 5);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--mb" => mb = num().expect("--mb N"),
            "--runs" => runs = num().expect("--runs N") as u32,
            _ => {} // cargo bench passes --bench
        }
    }
    (mb, runs)
}

/// What one launch of hello ships: a package per server, and the database's data source.
struct Load {
    packages: Vec<PackageRef>,
    small: FileRef,
    large: FileRef,
}

fn fresh(dir: &Path) -> Beneath {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    Beneath::open(dir).unwrap()
}

fn expected(f: &FileRef) -> Expected {
    Expected {
        object: f.key.clone(),
        sha256: f.sha256.clone(),
        size: f.size,
    }
}

/// The shared-disk path: the agent opens the control plane's directory.
async fn shared_disk(bucket: &Path, load: &Load, out: &Path, large: bool) -> Duration {
    let started = Instant::now();
    let files = CloudFiles::local(bucket).unwrap();
    for (i, p) in load.packages.iter().enumerate() {
        files
            .fetch_package(p, &fresh(&out.join(format!("p{i}"))))
            .await
            .unwrap();
    }
    let f = if large { &load.large } else { &load.small };
    files
        .fetch_file(&f.key, &fresh(&out.join("d")), Path::new("data.sql"))
        .await
        .unwrap();
    started.elapsed()
}

/// The network path: one endpoint client per server, as agents have.
async fn https(remote: &RemoteFiles, load: &Load, out: &Path, large: bool) -> Duration {
    let started = Instant::now();
    for (i, p) in load.packages.iter().enumerate() {
        let fetched = remote.fetch_package(p).await.unwrap();
        fetched
            .write_to(&fresh(&out.join(format!("p{i}"))))
            .unwrap();
    }
    let f = if large { &load.large } else { &load.small };
    remote
        .fetch_file(&expected(f), &fresh(&out.join("d")), Path::new("data.sql"))
        .await
        .unwrap();
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mb, runs) = args();
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let files = CloudFiles::local(&bucket).unwrap();
    let hello = files
        .put_package("hello-service-app", &root.join("plugins/hello"))
        .await
        .unwrap();
    let proxy = files
        .put_package("hello-service-lb", &root.join("plugins/hello-proxy"))
        .await
        .unwrap();
    let small = files
        .put_file("small", &root.join("examples/hello/datasource.sql"))
        .await
        .unwrap();
    let big = tmp.path().join("big.sql");
    let bytes: Vec<u8> = (0..mb * 1_000_000)
        .map(|i| b"0123456789abcdef\n"[(i % 17) as usize])
        .collect();
    std::fs::write(&big, &bytes).unwrap();
    drop(bytes);
    let large = files.put_file("large", &big).await.unwrap();
    for a in [
        &hello.manifest,
        &proxy.manifest,
        &small.sha256,
        &large.sha256,
    ] {
        files.grant("hello", &a.parse().unwrap()).await.unwrap();
    }
    for p in [&hello, &proxy] {
        files.grant_package("hello", p).await.unwrap();
    }
    // db, app, app, lb.
    let load = Load {
        packages: vec![hello.clone(), hello.clone(), hello, proxy],
        small,
        large,
    };
    let payload: u64 = {
        let dir = tmp.path().join("sizes");
        shared_disk(&bucket, &load, &dir, false).await;
        du(&dir)
    };

    let identity = stratus_protocol::tls::ControlIdentity::load_or_generate(tmp.path()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(
        FileEndpoint::new(files.clone(), Arc::new(Anyone), identity.server_config())
            .serve(listener),
    );
    let counted = Arc::new(AtomicU64::new(0));
    let via = relay(target, counted.clone()).await;
    let remote = RemoteFiles::new(
        &format!("https://{via}"),
        stratus_protocol::tls::pinned_client_config(&identity.fingerprint),
        AgentIdentity {
            deployment: "hello".into(),
            server_id: "db-1".into(),
            credential: Secret::new("x"),
        },
    )
    .unwrap();

    let out = tmp.path().join("out");
    println!(
        "hello: 4 packages ({} files) + data source; payload {payload} bytes",
        load.packages.iter().map(|p| p.files).sum::<usize>()
    );
    for large in [false, true] {
        let (mut disk, mut net) = (Vec::new(), Vec::new());
        counted.store(0, Ordering::Relaxed);
        for run in 0..runs {
            if run % 2 == 0 {
                disk.push(shared_disk(&bucket, &load, &out, large).await);
                net.push(https(&remote, &load, &out, large).await);
            } else {
                net.push(https(&remote, &load, &out, large).await);
                disk.push(shared_disk(&bucket, &load, &out, large).await);
            }
        }
        // Let the relay count the last connection's close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let wire = counted.load(Ordering::Relaxed) / runs as u64;
        let data = if large {
            load.large.size
        } else {
            load.small.size
        };
        let label = if large {
            format!("{mb} MB data source")
        } else {
            "small data source".into()
        };
        println!(
            "hello packages + {label}: payload {} bytes | shared disk {:.1} ms | HTTPS {:.1} ms, {wire} bytes on the wire",
            payload - load.small.size + data,
            median(disk).as_secs_f64() * 1e3,
            median(net).as_secs_f64() * 1e3,
        );
    }
}

/// Bytes of the regular files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}
