use super::*;
use crate::plugin::capabilities::{Access, DirKind, NetHost};

const FULL: &str = r#"
[plugin]
name = "hello"
version = "0.1.0"
world = "service"

[capabilities]
memory-mb = 32
timeout-ms = 500
output-bytes = 1024
dirs = [ { dir = "service", access = "read-write" } ]
programs = ["/usr/bin/echo"]
network = ["127.0.0.1:3306", "self:*"]
env = { GREETING = "hi" }
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("pkg/plugin.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn full_manifest_parses() {
    let m = parse(FULL).unwrap();
    assert_eq!(m.plugin.name, "hello");
    assert_eq!(m.plugin.world, World::Service);
    assert_eq!(m.plugin.component, "plugin.wasm");
    let c = &m.capabilities;
    assert_eq!((c.memory_mb, c.timeout_ms, c.output_bytes), (32, 500, 1024));
    assert_eq!(c.dir(DirKind::Service), Some(Access::ReadWrite));
    assert_eq!(c.dir(DirKind::ServerConfig), None);
    assert_eq!(c.dir(DirKind::WorkDir), None);
    assert!(c.allows_program(Path::new("/usr/bin/echo")));
    assert_eq!(c.network[0].port, Some(3306));
    assert_eq!(c.network[1].host, NetHost::SelfServer);
    assert_eq!(c.network[1].port, None);
    assert_eq!(c.env.get("GREETING").map(String::as_str), Some("hi"));
}

#[test]
fn absent_capabilities_deny_everything_with_defaults() {
    let m = parse("[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n").unwrap();
    let c = &m.capabilities;
    assert_eq!(
        (c.memory_mb, c.timeout_ms, c.output_bytes),
        (64, 10_000, 65_536)
    );
    assert!(c.dirs.is_empty() && c.programs.is_empty() && c.network.is_empty() && c.env.is_empty());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err(
        "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n[capabilities]\nshell = true\n",
    );
    assert!(e.contains("pkg/plugin.toml"), "{e}");
    assert!(e.contains("line 6"), "{e}");
    assert!(e.contains("shell"), "{e}");
}

#[test]
fn relative_program_is_rejected_with_location() {
    let e = err(
        "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n[capabilities]\nprograms = [\"echo\"]\n",
    );
    assert!(e.contains("program `echo` must be an absolute path"), "{e}");
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn non_normal_program_path_is_rejected() {
    let e = err(
        "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n[capabilities]\nprograms = [\"/usr/bin/../bin/sh\"]\n",
    );
    assert!(e.contains("/usr/bin/sh"), "{e}");
}

#[test]
fn bad_network_grant_and_world_are_rejected() {
    let e = err(
        "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n[capabilities]\nnetwork = [\"db:3306\"]\n",
    );
    assert!(e.contains("network grant `db:3306`"), "{e}");
    let e = err("[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"daemon\"\n");
    assert!(e.contains("daemon"), "{e}");
}

#[test]
fn semantic_limits_are_checked() {
    let base = "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"service\"\n";
    assert!(
        err(&format!("{base}[capabilities]\nmemory-mb = 4096\n"))
            .contains("memory-mb must be between 1 and")
    );
    assert!(err(&format!("{base}[capabilities]\ntimeout-ms = 0\n")).contains("timeout-ms"));
    let huge = err(&format!(
        "{base}[capabilities]\ntimeout-ms = 18446744073709551615\n"
    ));
    assert!(
        huge.contains("timeout-ms must be between 1 and 3600000"),
        "{huge}"
    );
    assert!(err(&format!("{base}[capabilities]\noutput-bytes = 0\n")).contains("output-bytes"));
    let twice = "[capabilities]\ndirs = [{dir=\"service\",access=\"read-only\"},{dir=\"service\",access=\"read-write\"}]\n";
    assert!(err(&format!("{base}{twice}")).contains("grants `service` twice"));
    let esc = "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"service\"\ncomponent = \"../evil.wasm\"\n";
    assert!(err(esc).contains("relative path inside the package"));
    let name = "[plugin]\nname = \"../x\"\nversion = \"1\"\nworld = \"service\"\n";
    assert!(err(name).contains("plugin.name"));
}

const CM: &str = "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"cm\"\n[capabilities]\n";

#[test]
fn server_root_is_refused_naming_its_replacement_and_the_line() {
    let e = err(&format!(
        "{CM}dirs = [{{ dir = \"server-root\", access = \"read-write\" }}]\n"
    ));
    assert!(e.contains("pkg/plugin.toml") && e.contains("line 6"), "{e}");
    assert!(
        e.contains("server-root") && e.contains("server-config"),
        "{e}"
    );
}

#[test]
fn a_grant_the_world_does_not_support_is_refused_naming_grant_and_world() {
    let e = err(&format!(
        "{CM}dirs = [{{ dir = \"service\", access = \"read-write\" }}]\n"
    ));
    assert!(e.contains("`service`") && e.contains("cm world"), "{e}");
    for world in ["service", "proxy"] {
        let text = FULL
            .replace("world = \"service\"", &format!("world = \"{world}\""))
            .replace(
                "{ dir = \"service\", access = \"read-write\" }",
                "{ dir = \"work-dir\", access = \"read-only\" }",
            );
        let e = err(&text);
        assert!(
            e.contains("`work-dir`") && e.contains(&format!("{world} world")),
            "{e}"
        );
    }
    let ok = format!(
        "{CM}dirs = [{{ dir = \"work-dir\", access = \"read-write\" }}, {{ dir = \"server-config\", access = \"read-write\" }}]\n"
    );
    let m = parse(&ok).unwrap();
    assert_eq!(
        m.capabilities.dir(DirKind::ServerConfig),
        Some(Access::ReadWrite)
    );
}

#[test]
fn program_env_and_processes_are_checked() {
    let head = "[plugin]\nname = \"p\"\nversion = \"1\"\nworld = \"service\"\n[capabilities]\n";
    let m = parse(&format!(
        "{head}program-env = [\"PATH\", \"FACTER_*\"]\nprocesses = 32\n"
    ))
    .unwrap();
    assert_eq!(m.capabilities.processes, 32);
    assert_eq!(m.capabilities.program_env.len(), 2);
    assert_eq!(parse(head).unwrap().capabilities.processes, 256);
    for refused in ["LD_PRELOAD", "PYTHONPATH", "LD_*", "*"] {
        let e = err(&format!("{head}program-env = [\"{refused}\"]\n"));
        assert!(
            e.starts_with("pkg/plugin.toml: ") && e.contains(refused),
            "{e}"
        );
    }
    let e = err(&format!("{head}processes = 100000\n"));
    assert!(
        e.contains("capabilities.processes must be between 1 and 4096"),
        "{e}"
    );
    let e = err(&format!("{head}program-env = [\"A=B\"]\n"));
    assert!(e.contains("A=B"), "{e}");
}

#[test]
fn run_as_root_is_only_for_cm_and_named_when_refused() {
    use crate::plugin::capabilities::RunAs;
    assert_eq!(parse(FULL).unwrap().capabilities.run_as, RunAs::ProgramUser);
    let m = parse(&format!("{CM}run-as = \"root\"\n")).unwrap();
    assert_eq!(m.capabilities.run_as, RunAs::Root);
    for world in ["service", "proxy"] {
        let text = FULL.replace("world = \"service\"", &format!("world = \"{world}\""));
        let e = err(&format!("{text}run-as = \"root\"\n"));
        assert!(
            e.contains("run-as") && e.contains("cm world") && e.contains(&format!("a {world}")),
            "{e}"
        );
    }
    let e = err(&format!("{CM}run-as = \"admin\"\n"));
    assert!(e.contains("admin") && e.contains("run-as"), "{e}");
}

#[test]
fn strings_that_would_act_on_a_terminal_are_refused_shown_escaped() {
    for (from, to) in [
        ("version = \"0.1.0\"", "version = \"1.0.0\\u001b[8m\""),
        ("name = \"hello\"", "name = \"hel\\u001b]0;x\\u0007lo\""),
        ("GREETING = \"hi\"", "GREETING = \"h\\u202ei\""),
        ("\"/usr/bin/echo\"", "\"/usr/bin/ec\\u200bho\""),
    ] {
        let text = FULL.replace(from, to);
        assert_ne!(text, FULL);
        let e = err(&text);
        assert!(e.contains("holds a control or invisible character"), "{e}");
        assert!(!e.contains('\u{1b}') && !e.contains('\u{202e}'), "{e:?}");
    }
}

const SCALER_HEAD: &str = "[plugin]\nname = \"rule\"\nversion = \"1\"\nworld = \"scaler\"\n";

#[test]
fn a_scaler_may_set_only_its_memory_and_time() {
    let m = parse(&format!(
        "{SCALER_HEAD}[capabilities]\nmemory-mb = 16\ntimeout-ms = 200\n"
    ))
    .unwrap();
    assert_eq!(m.plugin.world, World::Scaler);
    assert_eq!(
        (m.capabilities.memory_mb, m.capabilities.timeout_ms),
        (16, 200)
    );
    assert!(parse(SCALER_HEAD).is_ok());
    let nested = SCALER_HEAD.replace("world", "component = \"lib/rule.wasm\"\nworld");
    assert!(err(&nested).contains("must be a file directly in a scaler's package"));
    for (line, key) in [
        ("dirs = []", "dirs"),
        ("programs = [\"/bin/sh\"]", "programs"),
        ("network = [\"127.0.0.1:80\"]", "network"),
        ("env = { A = \"b\" }", "env"),
        ("output-bytes = 65536", "output-bytes"),
        ("processes = 1", "processes"),
        ("run-as = \"program-user\"", "run-as"),
    ] {
        let e = err(&format!(
            "{SCALER_HEAD}[capabilities]\nmemory-mb = 16\n{line}\n"
        ));
        assert!(
            e.contains(&format!("capabilities.{key} is not allowed in a scaler"))
                && e.contains("pkg/plugin.toml"),
            "{line}: {e}"
        );
    }
}

/// A cloud driver's origins are the operator's grant: its manifest, like a scaler's, may set
/// only memory and time.
#[test]
fn a_cloud_driver_may_set_only_its_memory_and_time() {
    let head = SCALER_HEAD.replace("\"scaler\"", "\"cloud-driver\"");
    let m = parse(&format!("{head}[capabilities]\ntimeout-ms = 30000\n")).unwrap();
    assert_eq!(m.plugin.world, World::CloudDriver);
    for (line, key) in [
        ("network = [\"127.0.0.1:80\"]", "network"),
        ("programs = [\"/bin/sh\"]", "programs"),
        ("env = { A = \"b\" }", "env"),
    ] {
        let e = err(&format!("{head}[capabilities]\n{line}\n"));
        assert!(
            e.contains(&format!(
                "capabilities.{key} is not allowed in a cloud-driver: a cloud driver may only \
                 set memory-mb and timeout-ms (the HTTP origins it may reach are the `http` \
                 list of the provider's settings)"
            )),
            "{line}: {e}"
        );
    }
}

const HEAD: &str = "[plugin]\nname = \"x\"\nversion = \"1\"\nworld = \"service\"\n";

#[test]
fn build_table_defaults_to_rust_and_language_entries() {
    assert_eq!(parse(HEAD).unwrap().build, Build::default());
    assert_eq!(parse(HEAD).unwrap().build.language, Language::Rust);
    let py = parse(&format!("{HEAD}[build]\nlanguage = \"python\"\n")).unwrap();
    assert_eq!(py.build.entry(), Some("app.py"));
    let js = parse(&format!(
        "{HEAD}[build]\nlanguage = \"javascript\"\nentry = \"src/main.mjs\"\n"
    ))
    .unwrap();
    assert_eq!(js.build.language, Language::Javascript);
    assert_eq!(js.build.entry(), Some("src/main.mjs"));
}

#[test]
fn build_table_refuses_unknown_languages_keys_and_bad_entries() {
    let e = err(&format!("{HEAD}[build]\nlanguage = \"cobol\"\n"));
    assert!(e.contains("cobol") && e.contains("line 6"), "{e}");
    let e = err(&format!("{HEAD}[build]\ncommand = \"sh -c x\"\n"));
    assert!(e.contains("command") && e.contains("line 6"), "{e}");
    for (language, entry, says) in [
        ("rust", "lib.rs", "only for python and javascript"),
        ("python", "../app.py", "relative path inside the package"),
        ("python", "/tmp/app.py", "relative path inside the package"),
        ("python", "app.js", "must end in .py"),
        ("python", "my-app.py", "must name a Python module"),
        ("python", "1app.py", "must name a Python module"),
        ("javascript", "plugin.ts", "must end in .js or .mjs"),
        ("javascript", "", "relative path inside the package"),
    ] {
        let e = err(&format!(
            "{HEAD}[build]\nlanguage = \"{language}\"\nentry = \"{entry}\"\n"
        ));
        assert!(e.contains(says), "{language} {entry}: {e}");
        assert!(e.contains("pkg/plugin.toml"), "{e}");
    }
}

#[test]
fn plugin_names_are_at_most_64_characters() {
    assert_eq!(check_name(&"a".repeat(64)), Ok(()));
    let err = check_name(&"a".repeat(300)).unwrap_err();
    assert_eq!(
        err,
        "plugin.name is 300 characters long; at most 64 are allowed"
    );
}
