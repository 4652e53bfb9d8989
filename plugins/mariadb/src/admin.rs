//! The server's admin login. Programs run as a per-server uid that has no user name, so the
//! admin cannot be the socket-authenticated account of a system user: `mariadb-install-db`
//! gives `root@localhost` a password generated here (32 random hex digits), and the plugin's
//! client reads it from an option file in the service's private directory. Every other root
//! account (`root@127.0.0.1`, `root@::1`, `root@<host>`) and the anonymous ones are dropped,
//! so the admin can log in only over the socket, which only this server's uid can reach.

use crate::layout::Layout;
use stratus_plugin_sdk::service::*;

/// Bytes of randomness in the password (hex-encoded: 32 characters, nothing to quote).
const PASSWORD_BYTES: usize = 16;

/// A fresh random password.
pub fn generate() -> Result<String, HookError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| HookError::fatal(format!("generating the admin password: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// SQL run by `mariadbd --bootstrap` after the system tables exist (no grant tables are
/// loaded then, so it edits `mysql.global_priv` directly).
pub fn bootstrap_sql(password: &str) -> String {
    format!(
        "UPDATE mysql.global_priv SET priv = JSON_SET(priv, '$.plugin', \
         'mysql_native_password', '$.authentication_string', PASSWORD('{password}')) \
         WHERE User = 'root' AND Host = 'localhost';\n\
         DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';\n\
         DELETE FROM mysql.global_priv WHERE User = '';\n"
    )
}

/// The option file the client reads with `--defaults-file` (and nothing else).
pub fn option_file(password: &str) -> String {
    format!(
        "# The admin login of this server, written by the mariadb plugin.\n[client]\nuser = root\npassword = {password}\n"
    )
}

/// Writes the bootstrap SQL for a new password; returns the password. The option file is
/// written once the data directory accepted it ([`save`]).
pub fn prepare(l: &Layout) -> Result<String, HookError> {
    l.make_private_dir()?;
    let password = generate()?;
    files::write(l.admin_sql(), bootstrap_sql(&password))?;
    Ok(password)
}

/// Saves the option file and removes the bootstrap SQL.
pub fn save(l: &Layout, password: &str) -> Result<(), HookError> {
    files::write(l.admin_cnf(), option_file(password))?;
    forget_sql(l);
    Ok(())
}

/// Removes the bootstrap SQL (it holds the password in clear), whatever happened.
pub fn forget_sql(l: &Layout) {
    let _ = std::fs::remove_file(l.admin_sql());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_fresh_hex() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 2 * PASSWORD_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(bootstrap_sql(&a).contains(&format!("PASSWORD('{a}')")));
        assert!(option_file(&a).contains(&format!("\npassword = {a}\n")));
    }
}
