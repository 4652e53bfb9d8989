//! Package collection refuses links, devices, escapes and oversize archives, and a plugin
//! package without `plugin.toml` fails before anything else is read.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};
use stratus_cloud::{CloudFiles, FilesError};

fn plugin_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("cfg")).unwrap();
    std::fs::write(dir.join("plugin.toml"), "[plugin]").unwrap();
    std::fs::write(dir.join("plugin.wasm"), "\0asm").unwrap();
}

fn bucket(tmp: &Path) -> CloudFiles {
    CloudFiles::local(tmp.join("bucket")).unwrap()
}

#[tokio::test]
async fn a_link_in_a_package_directory_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    plugin_dir(&src);
    symlink("/etc/shadow", src.join("cfg/loot")).unwrap();
    let err = bucket(tmp.path()).put_package("p", &src).await.unwrap_err();
    assert!(
        matches!(&err, FilesError::Link { entry, .. } if entry == "cfg/loot"),
        "{err}"
    );
    assert!(err.to_string().contains("cfg/loot"), "{err}");

    // A linked directory is refused as well, not walked.
    std::fs::remove_file(src.join("cfg/loot")).unwrap();
    symlink("/etc", src.join("etc")).unwrap();
    let err = bucket(tmp.path()).put_files("p", &src).await.unwrap_err();
    assert!(
        matches!(&err, FilesError::Link { entry, .. } if entry == "etc"),
        "{err}"
    );
}

#[tokio::test]
async fn a_fifo_in_a_package_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    plugin_dir(&src);
    let status = std::process::Command::new("mkfifo")
        .arg(src.join("cfg/pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = bucket(tmp.path()).put_package("p", &src).await.unwrap_err();
    assert!(
        matches!(&err, FilesError::Special { entry, .. } if entry == "cfg/pipe"),
        "{err}"
    );
}

#[tokio::test]
async fn a_directory_without_plugin_toml_fails_before_anything_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    // /etc holds unreadable files and links; failing fast means none of them is touched.
    let start = Instant::now();
    let err = bucket(tmp.path())
        .put_package("p", Path::new("/etc"))
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::NoManifest(_)), "{err}");
    assert!(err.to_string().contains("/etc") && err.to_string().contains("plugin.toml"));
    assert!(start.elapsed() < Duration::from_secs(2));

    // A plugin.toml that is a link does not count.
    let src = tmp.path().join("pkg");
    plugin_dir(&src);
    std::fs::remove_file(src.join("plugin.toml")).unwrap();
    symlink("/etc/hostname", src.join("plugin.toml")).unwrap();
    let err = bucket(tmp.path()).put_package("p", &src).await.unwrap_err();
    assert!(matches!(err, FilesError::NoManifest(_)), "{err}");
}

/// One raw archive entry: path, type, content, link target.
type Entry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// Writes an archive with raw headers, so that entries tar's builder would refuse (links,
/// `..`) can be made.
fn archive(path: &Path, entries: &[Entry]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        {
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
        }
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.finish().unwrap();
}

#[tokio::test]
async fn archive_links_escapes_and_devices_are_refused_naming_the_entry() {
    use tar::EntryType as T;
    let tmp = tempfile::tempdir().unwrap();
    let files = bucket(tmp.path());
    let base: Entry = ("plugin.toml", T::Regular, b"[plugin]", None);
    let cases: [(&str, Entry); 5] = [
        ("loot", ("loot", T::Symlink, b"", Some("/etc/shadow"))),
        ("hard", ("hard", T::Link, b"", Some("/etc/shadow"))),
        ("../escape", ("../escape", T::Regular, b"x", None)),
        ("/abs", ("/abs", T::Regular, b"x", None)),
        ("dev", ("dev", T::Char, b"", None)),
    ];
    for (i, (entry, bad)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.tar"));
        archive(&path, &[base, bad]);
        let err = files.put_package("p", &path).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(entry), "{entry}: {text}");
        assert!(
            matches!(
                err,
                FilesError::Link { .. }
                    | FilesError::OutsideRoot { .. }
                    | FilesError::Special { .. }
            ),
            "{entry}: {text}"
        );
    }
    let ok = tmp.path().join("ok.tar");
    archive(&ok, &[base, ("./cfg/a", T::Regular, b"a", None)]);
    assert_eq!(files.put_package("p", &ok).await.unwrap().files, 2);
    let none = tmp.path().join("none.tar");
    archive(&none, &[("cfg/a", T::Regular, b"a", None)]);
    let err = files.put_package("p", &none).await.unwrap_err();
    assert!(matches!(err, FilesError::NoManifest(_)), "{err}");
    assert_eq!(files.put_files("p", &none).await.unwrap().files, 1);
}

#[tokio::test]
async fn archives_are_bounded_in_entries() {
    use tar::EntryType as T;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("many.tar");
    let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry> = names
        .iter()
        .map(|n| (n.as_str(), T::Regular, &b""[..], None))
        .collect();
    archive(&path, &entries);
    let err = bucket(tmp.path()).put_files("p", &path).await.unwrap_err();
    assert!(matches!(err, FilesError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("10000 entries"), "{err}");
}

#[tokio::test]
async fn a_hard_link_in_a_package_directory_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("pkg");
    plugin_dir(&src);
    // A second name of a file outside the package: uploading it would deliver that file.
    let outside = tmp.path().join("secret");
    std::fs::write(&outside, "outside").unwrap();
    std::fs::hard_link(&outside, src.join("cfg/loot")).unwrap();
    let err = bucket(tmp.path()).put_package("p", &src).await.unwrap_err();
    assert!(
        matches!(&err, FilesError::Link { entry, .. } if entry == "cfg/loot"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_source_must_be_a_regular_file_with_one_name() {
    let tmp = tempfile::tempdir().unwrap();
    let files = bucket(tmp.path());
    let real = tmp.path().join("real.sql");
    std::fs::write(&real, "CREATE TABLE t (id INT);").unwrap();
    let link = tmp.path().join("link.sql");
    symlink(&real, &link).unwrap();
    let second = tmp.path().join("second.sql");
    std::fs::hard_link(&real, &second).unwrap();
    for (path, why) in [
        (&link, "symbolic link"),
        (&second, "more than one name"),
        (&tmp.path().to_path_buf(), "not a regular file"),
    ] {
        let err = files.put_file("d/x.sql", path).await.unwrap_err();
        assert!(matches!(err, FilesError::NotRegular { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(why) && text.contains(&path.display().to_string()),
            "{text}"
        );
    }
    std::fs::remove_file(&second).unwrap();
    std::fs::remove_file(&link).unwrap();
    assert_eq!(files.put_file("d/x.sql", &real).await.unwrap().size, 24);
}
