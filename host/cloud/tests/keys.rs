//! Key management on a real directory.

use std::os::unix::fs::PermissionsExt;
use stratus_cloud::{KeyStore, Secret, digest, random_token};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_private_files_that_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let keys = KeyStore::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);

    let secret = keys.generate("shop/db/admin").unwrap();
    assert_eq!(secret.expose().len(), 24);
    assert!(secret.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one file, no temporaries: {files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    assert!(
        files[0].starts_with(&dir),
        "names cannot escape the directory"
    );

    let reopened = KeyStore::open(&dir).unwrap();
    assert!(reopened.get("shop/db/admin").unwrap() == Some(secret.clone()));
    assert!(reopened.get_or_generate("shop/db/admin").unwrap() == secret);
    assert!(
        reopened.get("shop_db_admin").unwrap().is_none(),
        "distinct names stay distinct"
    );

    let replaced = reopened.generate("shop/db/admin").unwrap();
    assert!(replaced != secret);
    assert!(reopened.get("shop/db/admin").unwrap() == Some(replaced));

    assert!(reopened.delete("shop/db/admin").unwrap());
    assert!(!reopened.delete("shop/db/admin").unwrap());
    assert!(reopened.get("shop/db/admin").unwrap().is_none());
    assert!(keys.get("").is_err());
}

#[test]
fn get_or_generate_creates_once() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(tmp.path()).unwrap();
    let first = keys.get_or_generate("agent/s1").unwrap();
    let second = keys.get_or_generate("agent/s1").unwrap();
    assert!(first == second);
    keys.set("agent/s2", &Secret::new("given")).unwrap();
    assert_eq!(keys.get("agent/s2").unwrap().unwrap().expose(), "given");
    std::fs::write(tmp.path().join("by-hand"), "typed\n").unwrap();
    assert_eq!(keys.get("by-hand").unwrap().unwrap().expose(), "typed");
}

#[test]
fn secrets_never_print() {
    let secret = random_token();
    assert_eq!(secret.expose().len(), 32);
    assert_eq!(format!("{secret}"), "****");
    let debug = format!("{secret:?} {:?}", Some(secret.clone()));
    assert!(!debug.contains(secret.expose()) && debug.contains("****"));
}

#[test]
fn digest_is_sha256_hex() {
    // sha256("abc"), a published test vector.
    assert_eq!(
        digest(&Secret::new("abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_ne!(random_token().expose(), random_token().expose());
}
