//! The settings of a `[providers.NAME]` table of `type = "ssh"`, checked when the table is
//! declared so that a bad one is refused with the provider and the setting named:
//!
//! ```toml
//! [providers.lab]
//! type = "ssh"
//! hosts = ["10.231.7.2", "10.231.7.3"]   # one server slot each: its address and SSH target
//! user = "root"                           # default "root"
//! port = 22                               # default 22
//! identity-key = "lab-ssh"                # the private key (OpenSSH format) in key management
//! known-hosts = "/etc/stratus/lab_known_hosts"  # required: host keys are pinned
//! remote-dir = "/var/lib/stratus-agent"   # default; all the provider puts on a host is under it
//! connect-timeout = 5                     # seconds, default 5
//! ```

use crate::{ProviderError, ProviderSettings, SettingValue};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// The `type` of an SSH provider table.
pub const SSH: &str = "ssh";
/// Where everything the provider puts on a host lives unless `remote-dir` says otherwise.
pub const DEFAULT_REMOTE_DIR: &str = "/var/lib/stratus-agent";
/// Seconds an SSH connection may take to be set up unless `connect-timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 5;
/// Longest `connect-timeout` accepted, in seconds: recovery asks every server each pass, and an
/// unreachable host holds a pass up this long.
pub const MAX_CONNECT_TIMEOUT: u64 = 120;
/// Most entries `hosts` may list.
pub const MAX_HOSTS: usize = 4096;
/// Longest `remote-dir`, in bytes (it prefixes every path on a host).
pub const MAX_REMOTE_DIR: usize = 200;
/// Longest `user` (the Linux limit on a user name).
pub const MAX_USER: usize = 32;

/// A parsed, checked SSH provider table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// The server slots: each the address a server gets and the host SSH reaches it at.
    pub hosts: Vec<Ipv4Addr>,
    pub user: String,
    pub port: u16,
    /// The name of the key in key management holding the private key.
    pub identity_key: String,
    /// The OpenSSH known_hosts file pinning the hosts' keys.
    pub known_hosts: PathBuf,
    /// Absolute; only `[A-Za-z0-9._-]` components, none `.` or `..`.
    pub remote_dir: String,
    pub connect_timeout: Duration,
}

impl SshSettings {
    /// Parses and checks `settings` of provider `name`.
    pub fn parse(name: &str, settings: &ProviderSettings) -> Result<SshSettings, ProviderError> {
        let bad = |message: String| ProviderError::Settings {
            provider: name.to_string(),
            message,
        };
        const KNOWN: [&str; 7] = [
            "hosts",
            "user",
            "port",
            "identity-key",
            "known-hosts",
            "remote-dir",
            "connect-timeout",
        ];
        if let Some(other) = settings.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad(format!(
                "unknown setting `{other}` for an ssh provider (known: {})",
                KNOWN.join(", ")
            )));
        }
        Ok(SshSettings {
            hosts: hosts(settings).map_err(bad)?,
            user: user(settings).map_err(bad)?,
            port: port(settings).map_err(bad)?,
            identity_key: identity_key(settings).map_err(bad)?,
            known_hosts: known_hosts(settings).map_err(bad)?,
            remote_dir: remote_dir(settings).map_err(bad)?,
            connect_timeout: connect_timeout(settings).map_err(bad)?,
        })
    }
}

fn wrong_kind(setting: &str, want: &str, got: &SettingValue) -> String {
    format!("`{setting}` must be {want}, not {}", got.kind())
}

fn hosts(settings: &ProviderSettings) -> Result<Vec<Ipv4Addr>, String> {
    let list = match settings.get("hosts") {
        Some(SettingValue::List(l)) => l,
        Some(other) => return Err(wrong_kind("hosts", "a list of IPv4 addresses", other)),
        None => return Err("`hosts` is required: the servers' addresses, one per slot".into()),
    };
    if list.is_empty() || list.len() > MAX_HOSTS {
        return Err(format!("`hosts` must list 1 to {MAX_HOSTS} addresses"));
    }
    let mut out: Vec<Ipv4Addr> = Vec::with_capacity(list.len());
    for (i, host) in list.iter().enumerate() {
        // Only address literals: a slot is the address its server gets, and nothing a name
        // server says can turn into a command-line option of `ssh`.
        let addr: Ipv4Addr = host.parse().map_err(|_| {
            format!(
                "`hosts[{i}]` ({:?}) is not an IPv4 address (like 10.0.0.2)",
                host.escape_debug().to_string()
            )
        })?;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(format!(
                "`hosts[{i}]` ({addr}) cannot be a server's address"
            ));
        }
        if out.contains(&addr) {
            return Err(format!("`hosts[{i}]` ({addr}) is listed twice"));
        }
        // A slot's program uid is made of its address's low 24 bits.
        let mask = crate::ssh::SLOT_UID_MASK;
        if let Some(other) = out
            .iter()
            .find(|o| u32::from(**o) & mask == u32::from(addr) & mask)
        {
            return Err(format!(
                "`hosts[{i}]` ({addr}) and {other} differ only in their first byte; slots' \
                 program users are told apart by the other three"
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

fn text<'a>(settings: &'a ProviderSettings, setting: &str) -> Result<Option<&'a str>, String> {
    match settings.get(setting) {
        Some(SettingValue::Text(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_kind(setting, "a string", other)),
        None => Ok(None),
    }
}

fn integer(settings: &ProviderSettings, setting: &str) -> Result<Option<i64>, String> {
    match settings.get(setting) {
        Some(SettingValue::Integer(i)) => Ok(Some(*i)),
        Some(other) => Err(wrong_kind(setting, "an integer", other)),
        None => Ok(None),
    }
}

fn user(settings: &ProviderSettings) -> Result<String, String> {
    let Some(user) = text(settings, "user")? else {
        return Ok("root".into());
    };
    // A POSIX-portable user name: it goes on ssh's command line after `-l`.
    let ok = (1..=MAX_USER).contains(&user.len())
        && user
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(format!(
            "`user` ({:?}) is not a user name (a lowercase letter or '_', then letters, digits, \
             '_', '-' or '.'; at most {MAX_USER})",
            user.escape_debug().to_string()
        ));
    }
    Ok(user.to_string())
}

fn port(settings: &ProviderSettings) -> Result<u16, String> {
    match integer(settings, "port")? {
        None => Ok(22),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`port` ({p}) must be 1 to 65535")),
    }
}

fn identity_key(settings: &ProviderSettings) -> Result<String, String> {
    match settings.get("identity-key") {
        Some(SettingValue::Key(k)) => Ok(k.clone()),
        Some(other) => Err(wrong_kind(
            "identity-key",
            "a key reference (the name of a key in key management)",
            other,
        )),
        None => Err(
            "`identity-key` is required: the name of the key in key management holding the \
             private key SSH logs in with"
                .into(),
        ),
    }
}

fn known_hosts(settings: &ProviderSettings) -> Result<PathBuf, String> {
    let Some(path) = text(settings, "known-hosts")? else {
        return Err(
            "`known-hosts` is required: the OpenSSH known_hosts file pinning the hosts' keys \
             (host keys are never accepted on first sight)"
                .into(),
        );
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!(
            "`known-hosts` ({}) must be an absolute path",
            path.display()
        ));
    }
    // A file with a comma, space or tab in its name would split ssh's `-o` option value.
    if path
        .to_str()
        .is_some_and(|p| p.contains([',', '"']) || p.contains(char::is_whitespace))
    {
        return Err(format!(
            "`known-hosts` ({}) must not contain a comma, space, tab or quote",
            path.display()
        ));
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => pinned_by_us(&path).map(|()| path),
        Ok(_) => Err(format!("`known-hosts` ({}) is not a file", path.display())),
        Err(e) => Err(format!("`known-hosts` ({}): {e}", path.display())),
    }
}

/// Refuses a known_hosts file that someone else could change, through the file or any
/// directory above it (a sticky directory such as /tmp excepted): whoever can add a line to
/// it chooses which machine gets the servers' bootstraps and credentials.
fn pinned_by_us(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    // The directories that matter are those of the file a link leads to.
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("`known-hosts` ({}): {e}", path.display()))?;
    let mut at = Some(real.as_path());
    while let Some(p) = at {
        let m = std::fs::metadata(p)
            .map_err(|e| format!("`known-hosts` ({}): {}: {e}", path.display(), p.display()))?;
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        let others_write = m.mode() & 0o022 != 0 && !sticky_dir;
        if (m.uid() != 0 && m.uid() != me) || others_write {
            return Err(format!(
                "`known-hosts` ({}): {} may be changed by another user than this one (owner \
                 uid {}, mode {:o}); the file pinning the hosts' keys must be ours alone",
                path.display(),
                p.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
        at = p.parent().filter(|d| !d.as_os_str().is_empty());
    }
    Ok(())
}

fn remote_dir(settings: &ProviderSettings) -> Result<String, String> {
    let Some(dir) = text(settings, "remote-dir")? else {
        return Ok(DEFAULT_REMOTE_DIR.into());
    };
    let dir = dir.trim_end_matches('/');
    let components: Vec<&str> = dir.split('/').skip(1).collect();
    let ok = dir.starts_with('/')
        && dir.len() <= MAX_REMOTE_DIR
        && !components.is_empty()
        && components.iter().all(|c| {
            !c.is_empty()
                && *c != "."
                && *c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        });
    if !ok {
        return Err(format!(
            "`remote-dir` ({:?}) must be an absolute directory other than / whose components \
             use only letters, digits, '-', '_' and '.' (no `.` or `..`; at most \
             {MAX_REMOTE_DIR} bytes)",
            dir.escape_debug().to_string()
        ));
    }
    Ok(dir.to_string())
}

fn connect_timeout(settings: &ProviderSettings) -> Result<Duration, String> {
    match integer(settings, "connect-timeout")? {
        None => Ok(Duration::from_secs(DEFAULT_CONNECT_TIMEOUT)),
        Some(s) if (1..=MAX_CONNECT_TIMEOUT as i64).contains(&s) => {
            Ok(Duration::from_secs(s as u64))
        }
        Some(s) => Err(format!(
            "`connect-timeout` ({s}) must be 1 to {MAX_CONNECT_TIMEOUT} seconds"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(known_hosts: &std::path::Path) -> ProviderSettings {
        ProviderSettings::from([
            (
                "hosts".into(),
                SettingValue::List(vec!["10.231.7.2".into(), "10.231.7.3".into()]),
            ),
            ("identity-key".into(), SettingValue::Key("lab-ssh".into())),
            (
                "known-hosts".into(),
                SettingValue::Text(known_hosts.to_string_lossy().into_owned()),
            ),
        ])
    }

    fn error(settings: &ProviderSettings) -> String {
        SshSettings::parse("lab", settings).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_what_the_table_leaves_out() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let s = SshSettings::parse("lab", &table(file.path())).unwrap();
        assert_eq!(
            s.hosts,
            [
                "10.231.7.2".parse::<Ipv4Addr>().unwrap(),
                "10.231.7.3".parse().unwrap()
            ]
        );
        assert_eq!(s.user, "root");
        assert_eq!(s.port, 22);
        assert_eq!(s.identity_key, "lab-ssh");
        assert_eq!(s.remote_dir, DEFAULT_REMOTE_DIR);
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn every_setting_is_read() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut t = table(file.path());
        t.insert("user".into(), SettingValue::Text("deploy".into()));
        t.insert("port".into(), SettingValue::Integer(2222));
        t.insert(
            "remote-dir".into(),
            SettingValue::Text("/srv/stratus/".into()),
        );
        t.insert("connect-timeout".into(), SettingValue::Integer(2));
        let s = SshSettings::parse("lab", &t).unwrap();
        assert_eq!((s.user.as_str(), s.port), ("deploy", 2222));
        assert_eq!(s.remote_dir, "/srv/stratus");
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
    }

    /// Each bad value is refused with the provider and the setting named.
    #[test]
    fn bad_values_are_refused_naming_provider_and_setting() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let cases: Vec<(&str, Option<SettingValue>, &str)> = vec![
            ("hosts", None, "`hosts` is required"),
            (
                "hosts",
                Some(SettingValue::List(vec![])),
                "`hosts` must list",
            ),
            (
                "hosts",
                Some(SettingValue::List(vec!["-oProxyCommand=sh".into()])),
                "`hosts[0]`",
            ),
            (
                "hosts",
                Some(SettingValue::List(vec!["example.com".into()])),
                "not an IPv4",
            ),
            (
                "hosts",
                Some(SettingValue::List(vec![
                    "10.0.0.2".into(),
                    "10.0.0.2".into(),
                ])),
                "twice",
            ),
            (
                "hosts",
                Some(SettingValue::List(vec!["0.0.0.0".into()])),
                "cannot be",
            ),
            (
                "hosts",
                Some(SettingValue::List(vec![
                    "10.1.2.3".into(),
                    "11.1.2.3".into(),
                ])),
                "first byte",
            ),
            (
                "hosts",
                Some(SettingValue::Text("10.0.0.2".into())),
                "a list",
            ),
            (
                "user",
                Some(SettingValue::Text("-oProxyCommand=x".into())),
                "`user`",
            ),
            ("user", Some(SettingValue::Text("a b".into())), "`user`"),
            ("user", Some(SettingValue::Text("Root".into())), "`user`"),
            ("port", Some(SettingValue::Integer(0)), "`port` (0)"),
            ("port", Some(SettingValue::Integer(70000)), "`port` (70000)"),
            (
                "port",
                Some(SettingValue::Text("22".into())),
                "`port` must be an integer",
            ),
            ("identity-key", None, "`identity-key` is required"),
            (
                "identity-key",
                Some(SettingValue::Text("x".into())),
                "a key reference",
            ),
            ("known-hosts", None, "`known-hosts` is required"),
            (
                "known-hosts",
                Some(SettingValue::Text("kh".into())),
                "absolute",
            ),
            (
                "known-hosts",
                Some(SettingValue::Text("/nonexistent/kh".into())),
                "/nonexistent/kh",
            ),
            (
                "known-hosts",
                Some(SettingValue::Text("/".into())),
                "not a file",
            ),
            (
                "known-hosts",
                Some(SettingValue::Text("/a,b".into())),
                "comma",
            ),
            (
                "remote-dir",
                Some(SettingValue::Text("var/lib/x".into())),
                "`remote-dir`",
            ),
            (
                "remote-dir",
                Some(SettingValue::Text("/".into())),
                "`remote-dir`",
            ),
            (
                "remote-dir",
                Some(SettingValue::Text("/var/../etc".into())),
                "`remote-dir`",
            ),
            (
                "remote-dir",
                Some(SettingValue::Text("/var/$(reboot)".into())),
                "`remote-dir`",
            ),
            (
                "remote-dir",
                Some(SettingValue::Text("/var//x".into())),
                "`remote-dir`",
            ),
            (
                "connect-timeout",
                Some(SettingValue::Integer(0)),
                "`connect-timeout` (0)",
            ),
            (
                "connect-timeout",
                Some(SettingValue::Integer(100_000)),
                "`connect-timeout`",
            ),
            (
                "flavour",
                Some(SettingValue::Text("x".into())),
                "unknown setting `flavour`",
            ),
        ];
        for (setting, value, want) in cases {
            let mut t = table(file.path());
            match value {
                Some(v) => t.insert(setting.into(), v),
                None => t.remove(setting),
            };
            let e = error(&t);
            assert!(e.starts_with("provider `lab`: "), "{setting}: {e}");
            assert!(e.contains(want), "{setting}: {e} (wanted {want})");
        }
    }

    /// Whoever can add a line to the known_hosts file picks the machine that gets the
    /// bootstraps: a file or directory others may write is refused, naming it; a sticky
    /// directory (/tmp) above a private one is fine.
    #[test]
    fn a_known_hosts_file_others_can_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "").unwrap();
        mode(&kh, 0o644);
        SshSettings::parse("lab", &table(&kh)).unwrap();
        mode(&kh, 0o666);
        let e = error(&table(&kh));
        assert!(e.contains("`known-hosts`") && e.contains("mode 666"), "{e}");
        mode(&kh, 0o644);
        mode(dir.path(), 0o777);
        let e = error(&table(&kh));
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        mode(dir.path(), 0o1777);
        SshSettings::parse("lab", &table(&kh)).unwrap();
        let tab = dir.path().join("a\tb");
        std::fs::write(&tab, "").unwrap();
        assert!(error(&table(&tab)).contains("tab"));
    }
}
