//! Where the plugin keeps things in the service directory, and which port the server uses.

use std::path::{Path, PathBuf};
use stratus_plugin_sdk::service::*;

pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const CLIENT: &str = "/usr/bin/mariadb";
pub const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";

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
    /// Where the admin option file, the sockets and the one-off bootstrap SQL live. What
    /// keeps them from other servers is the server root, which only this server's program uid
    /// (and the agent) may enter; WASI cannot set file modes.
    pub fn private_dir(&self) -> PathBuf {
        self.at("private")
    }
    /// Creates [`Layout::private_dir`].
    pub fn make_private_dir(&self) -> Result<(), HookError> {
        let dir = self.private_dir();
        std::fs::create_dir_all(&dir).map_err(|e| files::io_error("creating", &dir, &e))
    }
    /// The client option file holding the server's generated admin (`root@localhost`) password.
    pub fn admin_cnf(&self) -> PathBuf {
        self.at("private/admin.cnf")
    }
    /// The SQL `mariadb-install-db` runs after creating the system tables; removed afterwards.
    pub fn admin_sql(&self) -> PathBuf {
        self.at("private/admin.sql")
    }
    pub fn socket(&self) -> PathBuf {
        self.at("private/mariadb.sock")
    }
    pub fn error_log(&self) -> PathBuf {
        self.at("mariadbd.err")
    }
    pub fn install_socket(&self) -> PathBuf {
        self.at("private/install.sock")
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
