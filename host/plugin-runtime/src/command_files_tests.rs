//! `host.run-with-files` called directly on a call's store data: real programs reading and
//! writing real files, and every path a hostile plugin could name refused with its reason.

use crate::bindings::host::{Command, CommandFiles, Host};
use crate::call::{Captured, State};
use crate::capabilities::{Access, Capabilities, DirGrant, DirKind, Program};
use crate::env::{CallEnv, DirMap, Labels};
use crate::output::Redactor;
use crate::supervisor::Supervisor;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

const PROGRAMS: [&str; 3] = ["/usr/bin/sha256sum", "/usr/bin/cat", "/usr/bin/wc"];

fn caps(access: Access) -> Capabilities {
    Capabilities {
        timeout_ms: 60_000,
        output_bytes: 1024,
        dirs: vec![DirGrant {
            dir: DirKind::Service,
            access,
        }],
        programs: PROGRAMS
            .iter()
            .map(|p| Program::try_from(p.to_string()).unwrap())
            .collect(),
        ..Capabilities::default()
    }
}

/// A call whose service directory is `<tmp>/svc`, granted with `access`.
fn state(tmp: &Path, access: Access) -> (State, Captured) {
    let svc = tmp.join("svc");
    std::fs::create_dir_all(&svc).unwrap();
    let env = CallEnv {
        sealed_package: None,
        dirs: DirMap::from([(DirKind::Service, svc)]),
        server_address: "127.0.0.1".into(),
        supervisor: Supervisor::new(tmp.join("logs")),
        capabilities: None,
        secrets: Vec::new(),
        labels: Labels::default(),
    };
    State::new("t", &caps(access), &env, Redactor::default(), None).unwrap()
}

fn cmd(program: &str) -> Command {
    Command {
        program: program.into(),
        args: Vec::new(),
        env: Vec::new(),
        working_dir: None,
        timeout_ms: 0,
        stdin: None,
    }
}

fn files(stdin: Option<&Path>, stdout: Option<&Path>) -> CommandFiles {
    let s = |p: Option<&Path>| p.map(|p| p.to_str().unwrap().to_string());
    CommandFiles {
        stdin_file: s(stdin),
        stdout_file: s(stdout),
    }
}

/// 50 MiB of varied lines, so a truncated or reordered copy cannot match.
fn big_file(path: &Path) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..1_000_000u32 {
        writeln!(
            f,
            "{i:>10} row of the data source, {:>20}",
            i.wrapping_mul(2654435761)
        )
        .unwrap();
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
async fn a_program_reads_its_stdin_from_a_file_and_writes_stdout_to_another() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, captured) = state(tmp.path(), Access::ReadWrite);
    let svc = tmp.path().join("svc");
    let input = svc.join("dump.sql");
    let size = big_file(&input);
    assert!(size > 50_000_000, "{size}");

    let out = s.run_with_files(cmd("/usr/bin/wc"), files(Some(&input), None));
    let out = out.await.unwrap().unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.stderr);
    let expected = format!("{} {} {}", 1_000_000, 7_000_000, size);
    let got: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(got.join(" "), expected);

    // A stale, longer file at the output path is truncated, not overwritten in place.
    let copy = svc.join("out/copy.sql");
    std::fs::create_dir(svc.join("out")).unwrap();
    std::fs::write(&copy, vec![b'x'; size as usize + 100]).unwrap();
    let out = s.run_with_files(cmd("/usr/bin/cat"), files(Some(&input), Some(&copy)));
    let out = out.await.unwrap().unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), ""));
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    assert_eq!(sha256_of(&copy), sha256_of(&input));

    // A new output file is the agent's, mode 0600.
    let fresh = svc.join("fresh.txt");
    let mut c = cmd("/usr/bin/sha256sum");
    c.stdin = Some("abc".into());
    let out = s
        .run_with_files(c, files(None, Some(&fresh)))
        .await
        .unwrap();
    assert_eq!(out.unwrap().exit_code, Some(0));
    let text = std::fs::read_to_string(&fresh).unwrap();
    assert!(
        text.starts_with("ba7816bf8f01cfea414140de5dae2223"),
        "{text}"
    );
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(captured.denials.lock().unwrap().is_empty());
}

/// Runs `cat` with `stdin`/`stdout` files and returns the refusal.
async fn refused(s: &mut State, stdin: Option<&Path>, stdout: Option<&Path>) -> String {
    let out = s
        .run_with_files(cmd("/usr/bin/cat"), files(stdin, stdout))
        .await;
    match out.unwrap() {
        Ok(o) => panic!("ran: {stdin:?} {stdout:?}: {:?}", o.exit_code),
        Err(e) => e,
    }
}

#[tokio::test]
async fn paths_outside_through_links_or_not_regular_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, captured) = state(tmp.path(), Access::ReadWrite);
    let svc = tmp.path().join("svc");
    std::fs::write(svc.join("inside.txt"), "inside").unwrap();
    std::fs::write(tmp.path().join("outside.txt"), "outside").unwrap();
    symlink("/etc/passwd", svc.join("passwd")).unwrap();
    symlink("inside.txt", svc.join("to-inside")).unwrap();
    symlink(".", svc.join("here")).unwrap();
    std::fs::create_dir(svc.join("sub")).unwrap();
    let fifo = svc.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let svc_s = svc.to_str().unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("/etc/passwd".into(), "is not inside a granted directory"),
        (
            "/proc/self/environ".into(),
            "is not inside a granted directory",
        ),
        (
            tmp.path().join("outside.txt").to_str().unwrap().into(),
            "is not inside a granted directory",
        ),
        (
            format!("{svc_s}/../outside.txt"),
            "contains `..`, which is not allowed",
        ),
        (
            format!("{svc_s}/sub/../inside.txt"),
            "contains `..`, which is not allowed",
        ),
        (
            format!("{svc_s}/passwd"),
            "is a symbolic link or is reached through one",
        ),
        (
            format!("{svc_s}/to-inside"),
            "is a symbolic link or is reached through one",
        ),
        (
            format!("{svc_s}/here/inside.txt"),
            "is a symbolic link or is reached through one",
        ),
        (
            format!("{svc_s}/fifo"),
            "is a FIFO; it must be a regular file",
        ),
        (
            format!("{svc_s}/sub"),
            "is a directory; it must be a regular file",
        ),
        (svc_s.into(), "is a directory; it must be a regular file"),
    ];
    for (path, reason) in &cases {
        let err = refused(&mut s, Some(Path::new(path)), None).await;
        assert_eq!(
            err,
            format!("capability denied: stdin-file {path} {reason}")
        );
    }
    // The same paths as standard output: refused for the same reasons (a FIFO without a
    // reader cannot even be opened), and nothing outside changed.
    for (path, reason) in &cases {
        let err = refused(&mut s, None, Some(Path::new(path))).await;
        let reason = reason.replace("is a FIFO;", "is a FIFO or socket;");
        assert_eq!(
            err,
            format!("capability denied: stdout-file {path} {reason}")
        );
    }
    assert!(!std::fs::read_to_string("/etc/passwd").unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(svc.join("inside.txt")).unwrap(),
        "inside"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("outside.txt")).unwrap(),
        "outside"
    );
    assert_eq!(captured.denials.lock().unwrap().len(), 2 * cases.len());

    let err = refused(&mut s, Some(Path::new("svc/inside.txt")), None).await;
    assert_eq!(err, "stdin-file `svc/inside.txt` must be an absolute path");
    let missing = svc.join("missing.sql");
    let err = refused(&mut s, Some(&missing), None).await;
    assert!(
        err.starts_with(&format!("stdin-file {}: ", missing.display())),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");
}

#[tokio::test]
async fn a_hard_linked_output_file_is_not_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = state(tmp.path(), Access::ReadWrite);
    let svc = tmp.path().join("svc");
    let precious = svc.join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    std::fs::hard_link(&precious, svc.join("alias")).unwrap();
    let err = refused(&mut s, None, Some(&svc.join("alias"))).await;
    assert!(err.ends_with("alias has other hard links; refusing to write through them"));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert_eq!(std::fs::metadata(&precious).unwrap().nlink(), 2);
    let err = refused(&mut s, Some(&svc.join("alias")), None).await;
    assert!(err.ends_with("alias has other hard links; refusing to read through them"));
}

#[tokio::test]
async fn read_only_grants_and_double_stdin_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, captured) = state(tmp.path(), Access::ReadOnly);
    let svc = tmp.path().join("svc");
    let input = svc.join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = svc.join("out.txt");
    let err = refused(&mut s, None, Some(&out)).await;
    assert_eq!(
        err,
        format!(
            "capability denied: stdout-file {} is in a directory the plugin may only read",
            out.display()
        )
    );
    assert!(!out.exists());
    // Reading is what a read-only grant allows.
    let ran = s.run_with_files(cmd("/usr/bin/cat"), files(Some(&input), None));
    assert_eq!(ran.await.unwrap().unwrap().stdout, "hello\n");

    let mut twice = cmd("/usr/bin/cat");
    twice.stdin = Some("inline".into());
    let err = s.run_with_files(twice, files(Some(&input), None)).await;
    assert_eq!(
        err.unwrap().unwrap_err(),
        "run-with-files: `stdin` and `stdin-file` are both set; give one"
    );
    let mut unlisted = cmd("/bin/sh");
    unlisted.args = vec!["-c".into(), "id".into()];
    let err = s.run_with_files(unlisted, files(Some(&input), None)).await;
    assert_eq!(
        err.unwrap().unwrap_err(),
        "capability denied: program /bin/sh is not in the plugin's allowed programs"
    );
    assert_eq!(captured.denials.lock().unwrap().len(), 2);
}
