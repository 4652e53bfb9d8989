//! The data directory and the data source: `mariadb-install-db` once, then the image loaded
//! once into its database. Markers in the data directory make both steps idempotent.

use crate::client::{self, Target};
use crate::layout::{INSTALL_DB, Layout};
use crate::{server, sql};
use stratus_plugin_sdk::service::*;

const INSTALL_DB_TIMEOUT_MS: u32 = 90_000;
/// Loading the image may take the hook's whole time (0: the plugin's `timeout-ms`, 580 s in
/// plugin.toml): the client reads it from the file itself, so its size is bounded only by
/// that time and the disk.
const LOAD_TIMEOUT_MS: u32 = 0;

/// Initialises the data directory unless a completed one is there; a half-made one (no
/// marker, e.g. after a crash) is removed and made again.
pub fn ensure(l: &Layout) -> Result<(), HookError> {
    if l.initialised_marker().exists() {
        return Ok(());
    }
    let data = l.datadir();
    if data.exists() {
        stratus_plugin_sdk::warn!("removing the unfinished data directory {}", data.display());
        std::fs::remove_dir_all(&data).map_err(|e| files::io_error("removing", &data, &e))?;
    }
    l.make_tmpdir()?;
    let password = crate::admin::prepare(l)?;
    log::status("initialising the MariaDB data directory");
    let cmd = host::Command {
        program: INSTALL_DB.into(),
        // --no-defaults first: the host's /etc/mysql must not shape this server.
        args: vec![
            "--no-defaults".into(),
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", l.tmpdir().display()),
            // A password (set by the extra file), not the unix socket: the program uid has
            // no user name for unix_socket to match.
            "--auth-root-authentication-method=normal".into(),
            format!("--extra-file={}", l.admin_sql().display()),
            "--skip-test-db".into(),
        ],
        env: vec![],
        working_dir: None,
        timeout_ms: INSTALL_DB_TIMEOUT_MS,
        stdin: None,
    };
    let out = host::run(&cmd);
    if out.as_ref().map_or(true, |o| o.exit_code != Some(0)) {
        crate::admin::forget_sql(l);
    }
    let out = out.map_err(|e| HookError::fatal(format!("running mariadb-install-db: {e}")))?;
    if out.exit_code != Some(0) {
        // The script ends with pages of boilerplate; the lines naming the failure say ERROR.
        let all: Vec<&str> = out.stderr.lines().chain(out.stdout.lines()).collect();
        let errors: Vec<&str> = all
            .iter()
            .copied()
            .filter(|l| l.contains("ERROR"))
            .collect();
        let pick = if errors.is_empty() { &all } else { &errors };
        let tail = pick[..pick.len().min(8)].join(" | ");
        return Err(HookError::fatal(format!(
            "mariadb-install-db --datadir={} failed ({:?}): {tail}",
            data.display(),
            out.exit_code
        )));
    }
    crate::admin::save(l, &password)?;
    files::write(l.initialised_marker(), "mariadb-install-db completed\n")?;
    stratus_plugin_sdk::info!("initialised {}", data.display());
    Ok(())
}

/// Initialises the data directory and loads `ctx.data_source` into its database once.
pub fn install_data_source(ctx: &ServiceContext) -> Result<(), HookError> {
    let l = Layout::of(ctx);
    let running = server::is_running();
    if !running {
        ensure(&l)?;
    }
    let Some(ds) = &ctx.data_source else {
        log::info("no data source to load");
        return Ok(());
    };
    sql::database(&ds.database)?;
    let marker = l.loaded_marker(&ds.database);
    if marker.exists() {
        // Loading again would wipe what the application wrote since.
        stratus_plugin_sdk::info!("data source already loaded into `{}`", ds.database);
        return Ok(());
    }
    let image = std::path::Path::new(&ds.image_path);
    // Named now, before a temporary server starts: the client is not the one to find it gone.
    let meta =
        std::fs::symlink_metadata(image).map_err(|e| files::io_error("reading", image, &e))?;
    stratus_plugin_sdk::info!("data source {} holds {} bytes", image.display(), meta.len());

    // The real server if it is up (a re-run after start), else a private one without TCP.
    let socket = if running {
        l.socket()
    } else {
        log::status("starting a temporary mariadbd to load the data source");
        server::start_install_server(&l)?;
        l.install_socket()
    };
    let loaded = load(&l, &socket, &ds.database, image);
    if !running {
        server::stop_install_server()?;
    }
    loaded?;
    files::write(&marker, format!("{}\n", ds.image_path))?;
    stratus_plugin_sdk::info!("loaded {} into `{}`", ds.image_path, ds.database);
    Ok(())
}

fn load(
    l: &Layout,
    socket: &std::path::Path,
    db: &str,
    image: &std::path::Path,
) -> Result<(), HookError> {
    let path = image.display();
    log::status(&format!("loading {path} into `{db}`"));
    let login = l.admin_cnf();
    let admin = Target {
        login: &login,
        socket,
        database: None,
        timeout_ms: 30_000,
    };
    let what = format!("creating database `{db}`");
    client::run(&admin, &what, sql::recreate_database(db)?, &[])?;
    let into = Target {
        login: &login,
        socket,
        database: Some(db),
        timeout_ms: LOAD_TIMEOUT_MS,
    };
    client::run_file(&into, &format!("loading {path} into `{db}`"), image)?;
    Ok(())
}
