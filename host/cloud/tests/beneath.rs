//! `Beneath`: writes into plugin-writable directories never follow a link.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use stratus_cloud::Beneath;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// A root with an outside file (mode 0600) next to it, the thing an attacker aims at.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("mnt/services/a1")).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "keep").unwrap();
    std::fs::set_permissions(
        outside.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    (tmp, root, outside)
}

fn untouched(outside: &Path) {
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "keep"
    );
    assert_eq!(mode(&outside.join("secret")), 0o600);
    assert_eq!(
        std::fs::read_dir(outside).unwrap().count(),
        1,
        "nothing created outside"
    );
}

#[test]
fn normal_paths_are_created_written_with_mode_and_removed() {
    let (_t, root, _) = setup();
    let b = Beneath::open(&root).unwrap();
    let path = b
        .write_file(Path::new("mnt/services/a1/cfg/new/x.conf"), b"x", 0o640)
        .unwrap();
    assert_eq!(path, root.join("mnt/services/a1/cfg/new/x.conf"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "x");
    assert_eq!(mode(&path), 0o640);
    // Rewriting an existing file sets the new mode too.
    b.write_file(Path::new("mnt/services/a1/cfg/new/x.conf"), b"y", 0o600)
        .unwrap();
    assert_eq!(
        (
            std::fs::read_to_string(&path).unwrap().as_str(),
            mode(&path)
        ),
        ("y", 0o600)
    );
    assert!(
        b.remove_file(Path::new("mnt/services/a1/cfg/new/x.conf"))
            .unwrap()
    );
    assert!(
        !b.remove_file(Path::new("mnt/services/a1/cfg/new/x.conf"))
            .unwrap()
    );
    assert!(!b.remove_file(Path::new("no/such/dir/x")).unwrap());
    // A name directly beneath the anchor, and the anchor itself as an empty path.
    let svc = b.open_dir(Path::new("mnt/services/a1")).unwrap();
    svc.write_file(Path::new("top"), b"t", 0o644).unwrap();
    assert!(
        svc.remove_file(Path::new("top")).unwrap(),
        "a top-level name"
    );
    assert!(!root.join("mnt/services/a1/top").exists());
    assert_eq!(b.open_dir(Path::new("")).unwrap().path(), b.path());
    assert!(b.write_file(Path::new("../x"), b"x", 0o644).is_err());
    assert!(b.write_file(Path::new("/etc/x"), b"x", 0o644).is_err());
}

#[test]
fn a_link_at_the_final_component_is_replaced_not_written_through() {
    let (_t, root, outside) = setup();
    let svc = root.join("mnt/services/a1");
    // Relative, as a sandboxed plugin would make it.
    symlink("../../../../outside/secret", svc.join("datasource.sql")).unwrap();
    let b = Beneath::open(&root).unwrap();
    b.write_file(Path::new("mnt/services/a1/datasource.sql"), b"data", 0o644)
        .unwrap();
    untouched(&outside);
    let meta = std::fs::symlink_metadata(svc.join("datasource.sql")).unwrap();
    assert!(meta.file_type().is_file(), "the link itself was replaced");
    // Removing a link removes the link, not its target.
    symlink("../../../../outside/secret", svc.join("cred.pem")).unwrap();
    assert!(
        b.remove_file(Path::new("mnt/services/a1/cred.pem"))
            .unwrap()
    );
    untouched(&outside);
}

#[test]
fn a_link_at_every_directory_position_is_refused() {
    for (at, rel) in [
        ("mnt", "mnt/services/a1/f"),
        ("mnt/services", "mnt/services/a1/f"),
        ("mnt/services/a1/cfg", "mnt/services/a1/cfg/f"),
        ("mnt/services/a1/cfg", "mnt/services/a1/cfg/deeper/f"),
    ] {
        let (_t, root, outside) = setup();
        let link = root.join(at);
        if link.exists() {
            std::fs::rename(&link, root.join("moved")).unwrap();
        }
        symlink(&outside, &link).unwrap();
        let b = Beneath::open(&root).unwrap();
        let err = b.write_file(Path::new(rel), b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{at}: {err}");
        let err = b
            .remove_file(Path::new(&format!("{at}/secret")))
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{at}: {err}");
        assert!(
            b.create_dir_all(Path::new(&format!("{at}/d"))).is_err(),
            "{at}"
        );
        // The link itself names a directory that exists: still refused, not opened.
        assert!(b.create_dir_all(Path::new(at)).is_err(), "{at}");
        assert!(
            b.read_file(Path::new(&format!("{at}/secret")), 100)
                .is_err(),
            "{at}"
        );
        untouched(&outside);
    }
}

#[test]
fn reads_and_usage_do_not_follow_links() {
    let (_t, root, outside) = setup();
    let svc = root.join("mnt/services/a1");
    std::fs::write(svc.join("f"), vec![1u8; 10_000]).unwrap();
    symlink(&outside, svc.join("out")).unwrap();
    symlink(outside.join("secret"), svc.join("secret")).unwrap();
    let b = Beneath::open(&root)
        .unwrap()
        .open_dir(Path::new("mnt/services/a1"))
        .unwrap();
    assert_eq!(b.read_file(Path::new("f"), 10_000).unwrap().len(), 10_000);
    assert!(
        b.read_file(Path::new("f"), 9_999).is_err(),
        "over the limit"
    );
    assert!(b.read_file(Path::new("secret"), 100).is_err());
    let usage = b.usage(100).unwrap();
    assert_eq!(usage.entries, 3);
    assert!(usage.bytes >= 10_000 && usage.bytes < 100_000, "{usage:?}");
    assert!(b.usage(2).is_err(), "entry cap");
}

#[test]
fn usage_of_a_very_deep_tree_is_an_error_not_a_crash() {
    let (_t, root, _) = setup();
    let mut deep = root.join("mnt/services/a1");
    for _ in 0..200 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let b = Beneath::open(&root).unwrap();
    let err = b.usage(1_000_000).unwrap_err();
    assert!(err.to_string().contains("deeper than"), "{err}");
}

#[test]
fn erasing_empties_every_name_of_the_file_and_only_unlinks_a_link() {
    let (_tmp, root, outside) = setup();
    let b = Beneath::open(&root).unwrap();
    let key = Path::new("mnt/services/a1/validation.pem");
    b.write_file(key, b"-----BEGIN KEY-----", 0o600).unwrap();
    // The plugin gave the key a second name where it can read it later.
    let copy = root.join("mnt/services/a1/kept.pem");
    std::fs::hard_link(root.join(key), &copy).unwrap();
    assert!(b.erase_file(key).unwrap());
    assert!(!root.join(key).exists());
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        b"",
        "the second name holds nothing"
    );

    // A link planted where the key was is removed; what it points at is left alone.
    symlink(outside.join("secret"), root.join(key)).unwrap();
    assert!(b.erase_file(key).unwrap());
    assert!(std::fs::symlink_metadata(root.join(key)).is_err());
    untouched(&outside);
}

/// Longer than PATH_MAX as a whole: the one-call open fails with ENAMETOOLONG, and the
/// component-by-component way still creates it (and `write_file` beneath it).
#[test]
fn a_path_longer_than_path_max_is_still_created() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Beneath::open(tmp.path()).unwrap();
    let comp = "d".repeat(100);
    let rel: PathBuf = std::iter::repeat_n(comp.as_str(), 45).collect();
    assert!(rel.as_os_str().len() > 4096);
    let dir = b.create_dir_all(&rel).expect("created");
    dir.write_file(Path::new("f"), b"x", 0o644).unwrap();
    b.write_file(&rel.join("g"), b"x", 0o644)
        .expect("write_file's parent too");
}
