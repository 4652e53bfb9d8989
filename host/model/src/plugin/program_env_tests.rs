use super::*;

fn pats(list: &[&str]) -> Vec<EnvPattern> {
    list.iter()
        .map(|s| EnvPattern::try_from(s.to_string()).unwrap())
        .collect()
}

fn var(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn loader_and_interpreter_variables_are_refused_even_when_listed() {
    let allowed = pats(&["*"]);
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "GCONV_PATH",
        "BASH_ENV",
    ] {
        let err = check_program_env(&allowed, [], &[var(name, "/x")]).unwrap_err();
        assert_eq!(err, EnvRefusal::Loader(name.into()));
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn only_listed_names_pass() {
    let allowed = pats(&["LANG", "FACTER_*"]);
    assert!(check_program_env(&allowed, [], &[var("LANG", "C"), var("FACTER_x", "1")]).is_ok());
    let err = check_program_env(&allowed, [], &[var("HOME", "/root")]).unwrap_err();
    assert_eq!(err, EnvRefusal::NotListed("HOME".into()));
    // A prefix covers only names that start with it.
    assert!(check_program_env(&allowed, [], &[var("FACTE", "1")]).is_err());
}

#[test]
fn path_must_be_absolute_and_outside_the_grants() {
    let dir = tempfile::tempdir().unwrap();
    let grant = dir.path().join("svc");
    std::fs::create_dir(&grant).unwrap();
    let allowed = pats(&["PATH"]);
    let check = |value: &str| check_program_env(&allowed, [grant.as_path()], &[var("PATH", value)]);
    assert!(check("/usr/bin:/bin").is_ok());
    assert_eq!(
        check("/usr/bin:bin"),
        Err(EnvRefusal::RelativePath("bin".into()))
    );
    assert_eq!(check("/usr/bin:"), Err(EnvRefusal::RelativePath("".into())));
    let inside = format!("{}/bin", grant.display());
    assert_eq!(check(&inside), Err(EnvRefusal::PathInGrant(inside.clone())));
    let sneaky = format!("/usr/bin/../..{}", grant.display());
    assert_eq!(check(&sneaky), Err(EnvRefusal::PathInGrant(sneaky.clone())));
    // /proc/self/cwd is the program's working directory, which may be the grant.
    for proc_path in ["/proc/self/cwd", "/proc/thread-self/cwd", "/dev/fd/3"] {
        assert_eq!(
            check(proc_path),
            Err(EnvRefusal::PathInProc(proc_path.into()))
        );
    }
    // A symlink outside the grant that leads into it is resolved.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&grant, &link).unwrap();
    let via = link.display().to_string();
    assert_eq!(check(&via), Err(EnvRefusal::PathInGrant(via.clone())));
    // Directories others can write (or make entries in) are as good as a grant.
    for shared in ["/tmp", "/var/tmp", "/tmp/not-there-yet/bin"] {
        assert_eq!(check(shared), Err(EnvRefusal::PathWritable(shared.into())));
    }
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let open = open.display().to_string();
    assert_eq!(check(&open), Err(EnvRefusal::PathWritable(open.clone())));
}

#[test]
fn patterns_are_names_or_prefixes() {
    for bad in ["", "A=B", "A B", "1ABC", "A*B", "**"] {
        assert!(EnvPattern::try_from(bad.to_string()).is_err(), "{bad}");
    }
    let facter = &pats(&["FACTER_*"])[0];
    assert!(facter.covers(&pats(&["FACTER_os"])[0]));
    assert!(!pats(&["FACTER_os"])[0].covers(facter));
}

#[test]
fn overlap_with_refused_names_is_found() {
    let overlap = |s: &str| pats(&[s])[0].refused_overlap();
    assert_eq!(overlap("LD_PRELOAD"), Some("LD_*"));
    assert_eq!(overlap("L*"), Some("LD_*"));
    assert_eq!(overlap("*"), Some("LD_*"));
    assert_eq!(overlap("PYTHONPATH"), Some("PYTHON*"));
    assert_eq!(overlap("PYTHON*"), Some("PYTHON*"));
    assert_eq!(overlap("FACTER_*"), None);
    assert_eq!(overlap("PATH"), None);
    assert_eq!(overlap("LANG"), None);
}

#[test]
fn locales_are_names_not_paths() {
    let allowed = pats(&["LANG", "LC_*"]);
    assert!(check_program_env(&allowed, [], &[var("LANG", "C.UTF-8")]).is_ok());
    let err = check_program_env(&allowed, [], &[var("LC_ALL", "/srv/x/evil")]).unwrap_err();
    assert_eq!(err, EnvRefusal::LocalePath("LC_ALL".into()));
}
