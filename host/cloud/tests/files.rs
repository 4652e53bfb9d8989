//! Cloud files on a real local object store.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use stratus_cloud::{Beneath, CloudFiles, FilesError};

fn write(path: &Path, content: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A package source directory as a plugin author has it, build files included.
fn package_source(dir: &Path) {
    write(&dir.join("plugin.toml"), "name = 'app'", 0o644);
    write(&dir.join("plugin.wasm"), "\0asm", 0o644);
    write(&dir.join("cfg/master.cnf"), "[mysqld]", 0o644);
    write(&dir.join("files/bin/app"), "#!/bin/sh\necho hi", 0o755);
    write(&dir.join("Cargo.toml"), "[package]", 0o644);
    write(&dir.join("Cargo.lock"), "", 0o644);
    write(&dir.join("src/lib.rs"), "", 0o644);
    write(&dir.join("target/debug/x"), "", 0o644);
    write(&dir.join(".gitignore"), "target", 0o644);
    write(&dir.join("cfg/.swp"), "", 0o644);
}

/// `dir` (created) as the anchor fetches write beneath.
fn beneath(dir: &Path) -> Beneath {
    std::fs::create_dir_all(dir).unwrap();
    Beneath::open(dir).unwrap()
}

fn relative(files: &[std::path::PathBuf], root: &Path) -> Vec<String> {
    let mut r: Vec<_> = files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    r.sort();
    r
}

const PAYLOAD: [&str; 4] = [
    "cfg/master.cnf",
    "files/bin/app",
    "plugin.toml",
    "plugin.wasm",
];

#[tokio::test]
async fn package_round_trip_keeps_payload_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src-pkg");
    package_source(&src);
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let pkg = files.put_package("app", &src).await.unwrap();
    assert_eq!(
        (pkg.name.as_str(), pkg.files, pkg.digest.len()),
        ("app", 4, 64)
    );
    let manifest = tmp.path().join(format!(
        "bucket/packages/app/{}/.stratus-manifest.json",
        pkg.digest
    ));
    assert!(manifest.is_file());

    let dest = tmp.path().join("server/mnt/services/a1");
    let written = files.fetch_package(&pkg, &beneath(&dest)).await.unwrap();
    assert_eq!(relative(&written, &dest), PAYLOAD);
    assert_eq!(
        std::fs::read_to_string(dest.join("cfg/master.cnf")).unwrap(),
        "[mysqld]"
    );
    let mode = |p: &str| {
        std::fs::metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("files/bin/app"),
        0o755,
        "the app binary stays executable"
    );
    assert_eq!(mode("plugin.toml"), 0o644);

    // Same content, same digest; a changed byte or mode makes a new one.
    assert_eq!(files.put_package("app", &src).await.unwrap(), pkg);
    std::fs::set_permissions(
        src.join("cfg/master.cnf"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(
        files.put_package("app", &src).await.unwrap().digest,
        pkg.digest
    );
}

#[tokio::test]
async fn archives_are_packages_too() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app");
    package_source(&src);
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let from_dir = files.put_package("app", &src).await.unwrap();

    // `tar czf app.tar.gz app/` puts everything under one top directory.
    let archive = tmp.path().join("app.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("app", &src).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let from_tgz = files.put_package("app", &archive).await.unwrap();
    assert_eq!(from_tgz, from_dir, "same payload, same digest");

    let plain = tmp.path().join("app.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&plain).unwrap());
    tar.append_dir_all(".", &src).unwrap();
    tar.finish().unwrap();
    assert_eq!(files.put_package("app", &plain).await.unwrap(), from_dir);

    let not = tmp.path().join("app.zip");
    std::fs::write(&not, "x").unwrap();
    let err = files.put_package("app", &not).await.unwrap_err();
    assert!(matches!(err, FilesError::NotAPackage(_)), "{err}");
}

#[tokio::test]
async fn corrupt_objects_are_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    package_source(&src);
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let pkg = files.put_package("app", &src).await.unwrap();
    let object = tmp
        .path()
        .join(format!("bucket/packages/app/{}/cfg/master.cnf", pkg.digest));
    std::fs::write(&object, "[mysqld]\nskip-grant-tables").unwrap();

    let dest = tmp.path().join("dest");
    let err = files
        .fetch_package(&pkg, &beneath(&dest))
        .await
        .unwrap_err();
    match &err {
        FilesError::CorruptFile { file, .. } => assert_eq!(file, "cfg/master.cnf"),
        other => panic!("expected a corrupt file error, got {other}"),
    }
    assert!(err.to_string().contains("cfg/master.cnf"));
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing written from a corrupt package"
    );

    let mut wrong = pkg.clone();
    wrong.files += 1;
    std::fs::write(&object, "[mysqld]").unwrap();
    let err = files
        .fetch_package(&wrong, &beneath(&dest))
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::DigestMismatch { .. }), "{err}");
    files.fetch_package(&pkg, &beneath(&dest)).await.unwrap();
}

#[tokio::test]
async fn data_files_round_trip_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let sql = tmp.path().join("datasource.sql");
    std::fs::write(&sql, "CREATE TABLE t (id INT);").unwrap();
    let put = files.put_file("shop/datasource.sql", &sql).await.unwrap();
    assert_eq!(put.size, 24);

    let server = beneath(&tmp.path().join("server"));
    let rel = Path::new("tmp/datasource.sql");
    let dest = tmp.path().join("server").join(rel);
    let got = files
        .fetch_file("shop/datasource.sql", &server, rel)
        .await
        .unwrap();
    assert_eq!(got, put);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "CREATE TABLE t (id INT);"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "a data source is delivered readable by its owner only"
    );

    // Kept by content address, not by key.
    let object = tmp
        .path()
        .join(format!("bucket/data/sha256/{}", put.sha256));
    std::fs::write(object, "DROP").unwrap();
    let err = files
        .fetch_file("shop/datasource.sql", &server, rel)
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::Mismatch { .. }), "{err}");
    assert!(
        files
            .fetch_file("shop/missing.sql", &server, rel)
            .await
            .is_err()
    );
    assert!(files.put_file("../escape", &sql).await.is_err());
}

/// A data source of several upload parts (and an empty one) round-trips byte for byte; a
/// corrupt object never replaces what the server has and leaves no temporary file behind.
#[tokio::test]
async fn large_data_sources_stream_in_parts_and_stay_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let files = CloudFiles::local(tmp.path().join("bucket")).unwrap();
    let sql = tmp.path().join("big.sql");
    let parts = stratus_cloud::files::DATA_SOURCE_CHUNK_BYTES * 3 + 12_345;
    let content: Vec<u8> = (0..parts).map(|i| (i % 251) as u8).collect();
    std::fs::write(&sql, &content).unwrap();
    let put = files.put_file("shop/big.sql", &sql).await.unwrap();
    assert_eq!(put.size, parts as u64);

    let server = beneath(&tmp.path().join("server"));
    let rel = Path::new("svc/big.sql");
    let dest = tmp.path().join("server").join(rel);
    assert_eq!(
        files
            .fetch_file("shop/big.sql", &server, rel)
            .await
            .unwrap(),
        put
    );
    assert!(std::fs::read(&dest).unwrap() == content, "content differs");

    let empty = tmp.path().join("empty.sql");
    std::fs::write(&empty, "").unwrap();
    let put_empty = files.put_file("shop/empty.sql", &empty).await.unwrap();
    assert_eq!(put_empty.size, 0);
    let erel = Path::new("svc/empty.sql");
    files
        .fetch_file("shop/empty.sql", &server, erel)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(tmp.path().join("server").join(erel))
            .unwrap()
            .len(),
        0
    );

    // Same length, one byte changed: only the digest can tell.
    let object = tmp
        .path()
        .join(format!("bucket/data/sha256/{}", put.sha256));
    let mut bad = content.clone();
    bad[parts / 2] ^= 1;
    std::fs::write(&object, &bad).unwrap();
    std::fs::write(&dest, "what the server had").unwrap();
    let err = files
        .fetch_file("shop/big.sql", &server, rel)
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::Mismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "what the server had"
    );
    let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".stratus-tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
