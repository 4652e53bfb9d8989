//! Where the plugin keeps things in the service directory, and which port the server uses.

use std::path::{Path, PathBuf};
use stratus_plugin_sdk::service::*;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const CLIENT: &str = "/usr/bin/mariadb";
pub const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

/// The system user mariadbd and the client run as: the agent's program user (named in
/// `STRATUS_PROGRAM_USER`), else the agent's own user, root. The server's superuser account
/// is this user's, authenticated by the socket peer's uid (unix_socket), so no password
/// exists to leak.
pub fn os_user() -> String {
    std::env::var("STRATUS_PROGRAM_USER").unwrap_or_else(|_| "root".into())
}

/// The supervised server's process name.
pub const SERVER_PROCESS: &str = "mariadbd";
/// The temporary server install-data-source runs when the real one is not up.
pub const INSTALL_PROCESS: &str = "mariadbd-install";

/// Port used when the context names none (MariaDB's default).
const DEFAULT_PORT: u16 = 3306;
/// A unix socket path must fit `sun_path` (108 bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Paths inside one service directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn of(ctx: &ServiceContext) -> Layout {
        Layout {
            dir: PathBuf::from(&ctx.service_dir),
        }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn datadir(&self) -> PathBuf {
        self.at("data")
    }
    /// A private tmpdir: concurrent servers sharing /tmp collide on temporary-table files
    /// (seen as `Unknown table 'mysql.tmp_user_sys'` from parallel mariadb-install-db runs).
    pub fn tmpdir(&self) -> PathBuf {
        self.at("tmp")
    }

    /// Creates the tmpdir, which every server started here needs.
    pub fn make_tmpdir(&self) -> Result<(), HookError> {
        let tmp = self.tmpdir();
        std::fs::create_dir_all(&tmp).map_err(|e| files::io_error("creating", &tmp, &e))
    }
    /// Written after mariadb-install-db succeeded; a data directory without it is half-made.
    pub fn initialised_marker(&self) -> PathBuf {
        self.at("data/.stratus-initialised")
    }
    /// Written after the image was loaded into `database`. It lives in the data directory so
    /// re-initialising the directory forgets it too.
    pub fn loaded_marker(&self, database: &str) -> PathBuf {
        self.at(&format!("data/.stratus-loaded-{database}"))
    }
    pub fn my_cnf(&self) -> PathBuf {
        self.at("my.cnf")
    }
    pub fn socket(&self) -> PathBuf {
        self.at("mariadb.sock")
    }
    pub fn error_log(&self) -> PathBuf {
        self.at("mariadbd.err")
    }
    pub fn install_socket(&self) -> PathBuf {
        self.at("install.sock")
    }
    pub fn install_pid(&self) -> PathBuf {
        self.at("install.pid")
    }
    pub fn install_log(&self) -> PathBuf {
        self.at("install.err")
    }
}

/// `path` as an argument string, refusing sockets the kernel cannot bind.
pub fn socket_arg(path: &Path) -> Result<String, HookError> {
    let s = path.display().to_string();
    if s.len() > MAX_SOCKET_PATH {
        return Err(HookError::fatal(format!(
            "socket path {s} is longer than {MAX_SOCKET_PATH} bytes; use a shorter service directory"
        )));
    }
    Ok(s)
}

/// The server's port: the one named `mysql`, else the first, else 3306.
pub fn port(ctx: &ServiceContext) -> u16 {
    ctx.ports
        .iter()
        .find(|p| p.name == "mysql")
        .or(ctx.ports.first())
        .map_or(DEFAULT_PORT, |p| p.private_port)
}
