use super::*;
use flate2::Compression;
use flate2::write::GzEncoder;

/// One entry of a test archive: a raw name (hostile ones included) and its type.
struct Item<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Item<'a> {
    Item {
        name: name.as_bytes(),
        kind: tar::EntryType::Regular,
        data,
        link: "",
    }
}

/// A tar.gz written header by header, so that names `tar::Builder` refuses can be made.
fn archive(items: &[Item<'_>]) -> Vec<u8> {
    let mut tar = Vec::new();
    for item in items {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..item.name.len()].copy_from_slice(item.name);
        h.set_entry_type(item.kind);
        h.set_size(item.data.len() as u64);
        h.set_mode(0o644);
        if !item.link.is_empty() {
            h.set_link_name(item.link).unwrap();
        }
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(item.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

const SPEC: &[u8] = b"[deployment]\nname = \"up\"\n";

fn unpack_in(bytes: &[u8]) -> (tempfile::TempDir, Result<PathBuf, UploadError>) {
    let dir = tempfile::tempdir().unwrap();
    let providers = ControlProviders::default();
    let result = unpack(bytes, &dir.path().join("uploads"), &providers);
    (dir, result)
}

/// Nothing is left of a refused archive.
fn assert_refused(bytes: &[u8], expect: &str) {
    let (dir, result) = unpack_in(bytes);
    let err = result
        .expect_err("a hostile archive must be refused")
        .to_string();
    assert!(err.contains(expect), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "a refused upload left {left:?}");
}

#[test]
fn a_plain_archive_unpacks_beneath_a_fresh_directory() {
    let bytes = archive(&[
        file("deployment.toml", SPEC),
        file("./pkg/plugin.toml", b"x"),
    ]);
    let (dir, result) = unpack_in(&bytes);
    let file = result.unwrap();
    assert!(file.starts_with(dir.path().join("uploads")));
    assert_eq!(std::fs::read(&file).unwrap(), SPEC);
    let pkg = file.parent().unwrap().join("pkg/plugin.toml");
    assert_eq!(std::fs::read(pkg).unwrap(), b"x");
}

#[test]
fn paths_that_leave_the_directory_are_refused() {
    for name in ["../escape", "/etc/escape", "pkg/../../escape"] {
        let bytes = archive(&[file("deployment.toml", SPEC), file(name, b"x")]);
        assert_refused(&bytes, "only relative paths");
    }
    let deep = "d/".repeat(MAX_DEPTH) + "f";
    assert_refused(&archive(&[file(&deep, b"x")]), "only relative paths");
}

#[test]
fn links_devices_and_fifos_are_refused() {
    for (kind, link) in [
        (tar::EntryType::Symlink, "/etc/passwd"),
        (tar::EntryType::Symlink, "inside"),
        (tar::EntryType::Link, "deployment.toml"),
        (tar::EntryType::Char, ""),
        (tar::EntryType::Fifo, ""),
    ] {
        let bytes = archive(&[
            file("deployment.toml", SPEC),
            Item {
                name: b"pkg",
                kind,
                data: b"",
                link,
            },
        ]);
        assert_refused(&bytes, "only files and directories are taken");
    }
}

#[test]
fn a_file_written_twice_is_refused() {
    let bytes = archive(&[file("deployment.toml", SPEC), file("deployment.toml", b"y")]);
    assert_refused(&bytes, "appears twice");
}

#[test]
fn sizes_and_entry_counts_are_bounded() {
    // A gzip bomb: a small upload that decompresses past the bound.
    let big = vec![0u8; (MAX_UNPACKED_BYTES + 4096) as usize];
    let bytes = archive(&[file("big", &big)]);
    assert!(bytes.len() < MAX_UPLOAD_BYTES);
    assert_refused(&bytes, "bytes once unpacked");
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|n| format!("f{n}")).collect();
    let items: Vec<Item<'_>> = names.iter().map(|n| file(n, b"")).collect();
    assert_refused(&archive(&items), "entries");
}

#[test]
fn an_archive_without_its_deployment_file_or_not_an_archive_is_refused() {
    assert_refused(&archive(&[file("other.toml", SPEC)]), "no deployment.toml");
    assert_refused(b"not gzip at all", "not a tar.gz archive");
}

#[test]
fn every_written_path_of_a_specification_is_found() {
    let spec = serde_json::json!({
        "services": {"s": {"package": {"path": {"written": "/etc", "resolved": "/etc"}}}},
        "cm": [{"files": {"written": "../x", "resolved": "/u/../x"}}],
        "name": "written",
    });
    let mut found = Vec::new();
    written_paths(&spec, &mut found);
    found.sort();
    assert_eq!(found, ["../x", "/etc"]);
    assert!(found.iter().all(|w| safe_relative(Path::new(w)).is_none()));
}
