//! The greeter's bounded CPU burner, as metrics and scaling-rule tests drive it: a deployment
//! of a files-only database and greeter app servers reporting every 500 ms, the greeter of a
//! server (found by its command line, whose `--config` names the file the `burn` switch sits
//! beside), and a switch that is off again when the test ends, however it ends.
//!
//! The database is the hello plugin's: the greeter reads it only when asked for a page, and
//! these tests never ask, so no MariaDB is needed to burn CPU.

use super::Stratus;
use std::path::{Path, PathBuf};

/// A db tier and an app tier whose lines (bounds, scaling table) are `app_tier`.
pub fn deployment(st: &Stratus, name: &str, app_tier: &str) -> PathBuf {
    let root = stratus_plugin_artifacts::repo_root();
    let hello = stratus_plugin_artifacts::package_dir("hello");
    let app = stratus_plugin_artifacts::package_dir("app");
    let text = format!(
        r#"[deployment]
name = "{name}"
metrics-interval = "500ms"

[tiers.db]
min = 1
max = 1
services = ["db"]

[tiers.app]
services = ["app"]
{app_tier}

[services.db]
package = "{hello}"
data-source = {{ image = "{sql}", database = "hello" }}
ports = {{ mysql = 3306 }}
credentials = ["admin"]

[services.app]
package = "{app}"
ports = {{ http = 8080 }}
depends-on = [{{ data-source = "db" }}]
"#,
        hello = hello.display(),
        app = app.display(),
        sql = root.join("examples/hello/datasource.sql").display(),
    );
    st.write_file(&format!("{name}.toml"), &text)
}

/// The greeter of `server`: its pid and the config file its command line names.
pub fn greeter(st: &Stratus, dep: &str, server: &str) -> (u32, PathBuf) {
    let root = st.dir().join(format!("servers/{dep}/{server}/"));
    let root = root.to_string_lossy();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_greeter = args.first().is_some_and(|p| p.ends_with("/bin/greeter"));
        let config = args.iter().skip_while(|a| *a != "--config").nth(1);
        if let (true, Some(config)) = (is_greeter, config)
            && config.starts_with(&*root)
            && super::alive(pid)
        {
            return (pid, PathBuf::from(config));
        }
    }
    panic!("no greeter runs for {server} under {root}")
}

/// The burner switch of a greeter; removed when dropped, so an assertion failing first never
/// leaves a core burning.
pub struct Switch(PathBuf);

impl Switch {
    /// The switch of the greeter of `server` (off).
    pub fn of(st: &Stratus, dep: &str, server: &str) -> Switch {
        Switch::beside(&greeter(st, dep, server).1)
    }

    /// The switch of the greeter whose configuration is `config`.
    pub fn beside(config: &Path) -> Switch {
        Switch(config.with_file_name("burn"))
    }

    pub fn on(&self) {
        std::fs::write(&self.0, b"").unwrap();
    }

    pub fn off(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.off();
    }
}
