use super::*;

fn caps() -> Capabilities {
    Capabilities {
        memory_mb: 64,
        timeout_ms: 1000,
        output_bytes: 4096,
        dirs: vec![
            DirGrant {
                dir: DirKind::Service,
                access: Access::ReadWrite,
            },
            DirGrant {
                dir: DirKind::ServerConfig,
                access: Access::ReadOnly,
            },
        ],
        programs: vec![prog("/usr/bin/echo"), prog("/usr/bin/mysql")],
        network: vec![grant("127.0.0.1:*"), grant("self:80")],
        env: [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "2".to_string()),
        ]
        .into(),
        program_env: vec![
            EnvPattern::try_from("PATH".to_string()).unwrap(),
            EnvPattern::try_from("FACTER_*".to_string()).unwrap(),
        ],
        processes: 64,
        disk_mb: 100,
        run_as: RunAs::Root,
    }
}

fn prog(s: &str) -> Program {
    Program::try_from(s.to_string()).unwrap()
}

fn grant(s: &str) -> NetworkGrant {
    NetworkGrant::try_from(s.to_string()).unwrap()
}

#[test]
fn empty_override_keeps_everything() {
    assert_eq!(
        caps().narrow(&CapabilityOverride::default()).unwrap(),
        caps()
    );
}

#[test]
fn narrowing_takes_away() {
    let op = CapabilityOverride {
        memory_mb: Some(32),
        timeout_ms: Some(500),
        output_bytes: Some(100),
        dirs: Some(vec![DirGrant {
            dir: DirKind::Service,
            access: Access::ReadOnly,
        }]),
        programs: Some(vec![prog("/usr/bin/echo")]),
        network: Some(vec![grant("127.0.0.1:3306")]),
        env: Some(vec!["B".into()]),
        ..Default::default()
    };
    let n = caps().narrow(&op).unwrap();
    assert_eq!((n.memory_mb, n.timeout_ms, n.output_bytes), (32, 500, 100));
    assert_eq!(
        n.dirs,
        vec![DirGrant {
            dir: DirKind::Service,
            access: Access::ReadOnly
        }]
    );
    assert_eq!(n.programs, vec![prog("/usr/bin/echo")]);
    assert_eq!(n.network, vec![grant("127.0.0.1:3306")]);
    assert_eq!(n.env.len(), 1);
    assert_eq!(n.env["B"], "2");
}

#[test]
fn widening_is_an_error_naming_every_widened_capability() {
    let op = CapabilityOverride {
        memory_mb: Some(128),
        dirs: Some(vec![
            DirGrant {
                dir: DirKind::ServerConfig,
                access: Access::ReadWrite,
            },
            DirGrant {
                dir: DirKind::WorkDir,
                access: Access::ReadOnly,
            },
        ]),
        programs: Some(vec![prog("/bin/sh")]),
        network: Some(vec![grant("10.0.0.1:22"), grant("self:*")]),
        env: Some(vec!["PATH".into()]),
        ..Default::default()
    };
    let e = caps().narrow(&op).unwrap_err();
    let text = e.to_string();
    for needle in [
        "memory-mb 128 > 64",
        "dir server-config is only read-only",
        "dir work-dir is not granted",
        "program /bin/sh is not granted",
        "network 10.0.0.1:22 is not granted",
        "network self:* is not granted",
        "env PATH is not declared",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert_eq!(e.widened.len(), 7);
}

#[test]
fn zero_limits_are_refused() {
    let op = CapabilityOverride {
        timeout_ms: Some(0),
        ..Default::default()
    };
    let e = caps().narrow(&op).unwrap_err();
    assert_eq!(e.widened, vec!["timeout-ms 0 is not a usable limit"]);
}

#[test]
fn override_parses_from_toml() {
    let op: CapabilityOverride =
        toml::from_str("memory-mb = 16\nprograms = [\"/usr/bin/echo\"]\n").unwrap();
    assert_eq!(op.memory_mb, Some(16));
    assert!(toml::from_str::<CapabilityOverride>("bogus = 1").is_err());
}

#[test]
fn network_grants_parse_and_match() {
    let g = grant("[::1]:8080");
    assert_eq!(g.to_string(), "[::1]:8080");
    assert!(g.allows("::1".parse().unwrap(), 8080, None));
    assert!(!g.allows("::1".parse().unwrap(), 8081, None));
    assert!(grant("localhost:*").allows("127.0.0.1".parse().unwrap(), 1, None));
    for bad in ["nohost", "db.example:80", "1.2.3.4:http", "1.2.3.4:70000"] {
        assert!(NetworkGrant::try_from(bad.to_string()).is_err(), "{bad}");
    }
}

#[test]
fn normalize_is_lexical() {
    assert_eq!(
        normalize(Path::new("/a/./b/../c//d")).unwrap(),
        Path::new("/a/c/d")
    );
    assert_eq!(
        normalize(Path::new("/../../etc")).unwrap(),
        Path::new("/etc")
    );
    assert!(normalize(Path::new("a/b")).is_none());
}

#[test]
fn service_programs_resolve_against_the_calls_service_dir() {
    let p = prog("service:bin/greeter");
    let dir = Path::new("/srv/a7");
    assert!(p.matches(Path::new("/srv/a7/bin/greeter"), Some(dir)));
    assert!(!p.matches(Path::new("/srv/a8/bin/greeter"), Some(dir)));
    assert!(!p.matches(Path::new("/srv/a7/bin/greeter"), None));
    let mut c = caps();
    c.programs.push(p);
    assert!(c.allows_program_in(Path::new("/srv/a7/bin/greeter"), Some(dir)));
    assert!(!c.allows_program(Path::new("/srv/a7/bin/greeter")));
    for bad in [
        "service:",
        "service:/bin/sh",
        "service:../x",
        "service:bin/../x",
        "service:./x",
        "service:bin/",
    ] {
        assert!(Program::try_from(bad.to_string()).is_err(), "{bad}");
    }
}

#[test]
fn narrowing_program_env_and_processes() {
    let pat = |s: &str| EnvPattern::try_from(s.to_string()).unwrap();
    let op = CapabilityOverride {
        program_env: Some(vec![pat("FACTER_os")]),
        processes: Some(8),
        ..Default::default()
    };
    let narrowed = caps().narrow(&op).unwrap();
    assert_eq!(narrowed.program_env, vec![pat("FACTER_os")]);
    assert_eq!(narrowed.processes, 8);
    let wide = CapabilityOverride {
        program_env: Some(vec![pat("LANG"), pat("FACTER_*")]),
        processes: Some(65),
        ..Default::default()
    };
    let err = caps().narrow(&wide).unwrap_err();
    assert_eq!(
        err.widened,
        vec![
            "processes 65 > 64".to_string(),
            "program-env LANG is not granted".into()
        ]
    );
}

#[test]
fn disk_mb_narrows_and_cannot_widen() {
    let op = CapabilityOverride {
        disk_mb: Some(10),
        ..Default::default()
    };
    assert_eq!(caps().narrow(&op).unwrap().disk_mb, 10);
    let op = CapabilityOverride {
        disk_mb: Some(101),
        ..Default::default()
    };
    assert_eq!(
        caps().narrow(&op).unwrap_err().widened,
        vec!["disk-mb 101 > 100".to_string()]
    );
}

#[test]
fn run_as_root_can_be_taken_away_never_added() {
    let root = caps();
    let op = CapabilityOverride {
        run_as: Some(RunAs::ProgramUser),
        ..Default::default()
    };
    assert_eq!(root.narrow(&op).unwrap().run_as, RunAs::ProgramUser);
    let plain = root.narrow(&op).unwrap();
    let widen = CapabilityOverride {
        run_as: Some(RunAs::Root),
        ..Default::default()
    };
    let e = plain.narrow(&widen).unwrap_err();
    assert!(e.to_string().contains("run-as root is not granted"), "{e}");
    assert_eq!(root.narrow(&widen).unwrap().run_as, RunAs::Root);
}
