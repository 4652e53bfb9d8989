//! `host.run-with-files` through the WIT boundary: the hostile guest (`rwf-*` attacks) streams
//! a file larger than its own memory through a program, and the host refuses the paths a
//! plugin could use to reach what it was not granted, naming the path and the reason.

mod common;

use common::{assert_healthy, context, env, shared_runtime};
use std::io::Write;
use std::path::{Path, PathBuf};
use stratus_model::context::HookCall;
use stratus_plugin_runtime::{CallFailure, HookFailure, HookOutcome, Package, Runtime, Supervisor};
use tempfile::TempDir;

/// The hostile plugin with 64 MiB of memory, granted three programs that read stdin.
const MANIFEST: &str = "[plugin]\nname = \"hostile\"\nversion = \"0.1.0\"\nworld = \"service\"\n\n\
    [capabilities]\nmemory-mb = 64\ntimeout-ms = 60000\noutput-bytes = 4096\n\
    programs = [\"/usr/bin/cat\", \"/usr/bin/sha256sum\", \"/usr/bin/wc\"]\n\
    dirs = [ { dir = \"service\", access = \"read-write\" } ]\n";

struct Setup {
    rt: Runtime,
    tmp: TempDir,
    service: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let service = tmp.path().join("a1000");
    std::fs::create_dir(&service).unwrap();
    Setup {
        rt: shared_runtime(),
        tmp,
        service,
    }
}

impl Setup {
    /// Runs hostile's `configure` with these settings.
    async fn configure(&self, settings: &[(&str, &str)]) -> Result<HookOutcome, CallFailure> {
        let pkg = self.tmp.path().join("pkg");
        if !pkg.exists() {
            std::fs::create_dir(&pkg).unwrap();
            let built = stratus_plugin_artifacts::package_dir("hostile").join("plugin.wasm");
            std::fs::copy(built, pkg.join("plugin.wasm")).unwrap();
            std::fs::write(pkg.join("plugin.toml"), MANIFEST).unwrap();
        }
        let plugin = self.rt.load(&Package::open(&pkg).unwrap()).await.unwrap();
        let call = HookCall::Configure {
            ctx: context(&self.service, settings),
        };
        let sup = Supervisor::new(self.tmp.path().join("logs"));
        plugin.call(&call, &env(&call, &sup, None)).await
    }

    /// How a refused call failed: the denied capability (the call recorded a denial, which
    /// the runtime reports as such) or the plugin's hook error; and the denials recorded.
    async fn refused(&self, settings: &[(&str, &str)]) -> (String, Vec<String>) {
        let f = match self.configure(settings).await {
            Ok(o) => panic!("ran: {o:?}"),
            Err(f) => f,
        };
        match f.kind {
            HookFailure::CapabilityDenied { capability } => {
                (format!("capability denied: {capability}"), f.denials)
            }
            HookFailure::HookError { message, .. } => (message, f.denials),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// 100 MiB of numbered lines: more than the plugin's whole memory.
fn big_file(path: &Path) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut i = 0u64;
    while i < 1_700_000 {
        writeln!(
            f,
            "{i:>12} line of a file larger than the plugin's memory {i:>12}"
        )
        .unwrap();
        i += 1;
    }
    f.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn sha256_of(path: &Path) -> String {
    let out = std::process::Command::new("/usr/bin/sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test]
async fn a_file_larger_than_the_plugins_memory_streams_through_a_program() {
    let s = setup();
    let dump = s.service.join("dump.sql");
    let size = big_file(&dump);
    assert!(size > 100 << 20, "{size}");
    s.configure(&[
        ("attack", "rwf-run"),
        ("program", "/usr/bin/cat"),
        ("stdin-file", "{dir}/dump.sql"),
        ("stdout-file", "{dir}/copy.sql"),
    ])
    .await
    .unwrap();
    let copy = s.service.join("copy.sql");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    assert_eq!(sha256_of(&copy), sha256_of(&dump));
    assert_eq!(
        std::fs::read_to_string(s.service.join("rwf.out")).unwrap(),
        "exit=0\n"
    );

    s.configure(&[
        ("attack", "rwf-run"),
        ("program", "/usr/bin/wc"),
        ("args", "-c"),
        ("stdin-file", "{dir}/copy.sql"),
    ])
    .await
    .unwrap();
    let out = std::fs::read_to_string(s.service.join("rwf.out")).unwrap();
    assert_eq!(out, format!("exit=0\n{size}\n"));
}

#[tokio::test]
async fn a_link_the_plugin_made_itself_is_refused_and_recorded() {
    let s = setup();
    for target in ["/etc/passwd", "/proc/self/environ"] {
        let _ = std::fs::remove_file(s.service.join("own-link"));
        let (err, denials) = s
            .refused(&[
                ("attack", "rwf-own-link"),
                ("target", target),
                ("stdin-file", "{dir}/own-link"),
            ])
            .await;
        let what = format!(
            "stdin-file {}/own-link is a symbolic link or is reached through one",
            s.service.display()
        );
        assert_eq!(err, format!("capability denied: {what}"));
        assert_eq!(denials, [what]);
    }
    // The same link as standard output: /etc/passwd is neither truncated nor written.
    let before = std::fs::read("/etc/passwd").unwrap();
    let _ = std::fs::remove_file(s.service.join("own-link"));
    let (err, _) = s
        .refused(&[
            ("attack", "rwf-own-link"),
            ("stdin", "overwritten"),
            ("stdout-file", "{dir}/own-link"),
        ])
        .await;
    assert!(
        err.ends_with("own-link is a symbolic link or is reached through one"),
        "{err}"
    );
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
    assert_healthy(&s.rt).await;
}

#[tokio::test]
async fn paths_outside_and_double_stdin_are_refused_through_the_guest() {
    let s = setup();
    std::fs::write(s.service.join("in.txt"), "x").unwrap();
    for (key, path, reason) in [
        (
            "stdin-file",
            "/proc/self/environ",
            "is not inside a granted directory",
        ),
        (
            "stdout-file",
            "/tmp/rwf-escape",
            "is not inside a granted directory",
        ),
        (
            "stdin-file",
            "{dir}/../../etc/passwd",
            "contains `..`, which is not allowed",
        ),
        (
            "stdout-file",
            "{dir}",
            "is a directory; it must be a regular file",
        ),
    ] {
        let (err, denials) = s.refused(&[("attack", "rwf-run"), (key, path)]).await;
        let path = path.replace("{dir}", s.service.to_str().unwrap());
        let what = format!("{key} {path} {reason}");
        assert_eq!(err, format!("capability denied: {what}"));
        assert_eq!(denials, [what]);
    }
    assert!(!Path::new("/tmp/rwf-escape").exists());
    let (err, denials) = s
        .refused(&[
            ("attack", "rwf-run"),
            ("stdin", "inline"),
            ("stdin-file", "{dir}/in.txt"),
        ])
        .await;
    assert_eq!(
        err,
        "run-with-files: `stdin` and `stdin-file` are both set; give one"
    );
    assert!(denials.is_empty());
}
