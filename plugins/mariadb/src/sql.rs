//! SQL text built from untrusted values: identifiers are validated, passwords quoted, so a
//! hostile grant cannot inject statements.

use std::net::Ipv4Addr;
use stratus_plugin_sdk::service::*;

/// MariaDB's limits: user names up to 80 characters, database names up to 64.
const MAX_USER: usize = 80;
const MAX_DATABASE: usize = 64;

fn identifier(kind: &str, value: &str, max: usize) -> Result<(), HookError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(HookError::fatal(format!(
            "{kind} name `{value}` must be 1-{max} characters of A-Z, a-z, 0-9 and _"
        )))
    }
}

pub fn database(name: &str) -> Result<(), HookError> {
    identifier("database", name, MAX_DATABASE)
}

pub fn user(name: &str) -> Result<(), HookError> {
    identifier("user", name, MAX_USER)
}

/// An address must be an IPv4 literal: grants are by IP (the server skips name resolution).
pub fn address(addr: &str) -> Result<Ipv4Addr, HookError> {
    addr.parse()
        .map_err(|_| HookError::fatal(format!("grant address `{addr}` is not an IPv4 address")))
}

/// `'…'` with `\` and `'` escaped. NUL cannot appear in a MariaDB password, so it is refused;
/// the error does not quote the password.
pub fn quote_password(password: &str) -> Result<String, HookError> {
    if password.contains('\0') {
        return Err(HookError::fatal(
            "a grant password contains a NUL character",
        ));
    }
    let mut out = String::with_capacity(password.len() + 2);
    out.push('\'');
    for c in password.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// The escaping above relies on backslash escapes, so the session must not disable them.
const SESSION_PREAMBLE: &str =
    "SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '');\n";

/// Statements that make exactly `grant.addresses` able to use `grant.database` as `grant.user`.
pub fn grant(g: &DatabaseGrant) -> Result<String, HookError> {
    database(&g.database)?;
    user(&g.user)?;
    let pw = quote_password(&g.password)?;
    let mut sql = String::from(SESSION_PREAMBLE);
    for a in &g.addresses {
        let who = format!("'{}'@'{}'", g.user, address(a)?);
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS {who} IDENTIFIED BY {pw};\n\
             ALTER USER {who} IDENTIFIED BY {pw};\n\
             GRANT ALL PRIVILEGES ON `{}`.* TO {who};\n",
            g.database
        ));
    }
    sql.push_str("FLUSH PRIVILEGES;\n");
    Ok(sql)
}

/// Statements that remove exactly the `user@address` pairs of `g`.
pub fn revoke(g: &DatabaseGrant) -> Result<String, HookError> {
    user(&g.user)?;
    let mut sql = String::new();
    for a in &g.addresses {
        sql.push_str(&format!(
            "DROP USER IF EXISTS '{}'@'{}';\n",
            g.user,
            address(a)?
        ));
    }
    sql.push_str("FLUSH PRIVILEGES;\n");
    Ok(sql)
}

/// Drops and re-creates `db`, so a half-finished earlier load leaves nothing behind.
pub fn recreate_database(db: &str) -> Result<String, HookError> {
    database(db)?;
    Ok(format!(
        "DROP DATABASE IF EXISTS `{db}`;\nCREATE DATABASE `{db}` CHARACTER SET utf8mb4;\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(user: &str, db: &str, pw: &str, addrs: &[&str]) -> DatabaseGrant {
        DatabaseGrant {
            service: "app".into(),
            database: db.into(),
            user: user.into(),
            password: pw.into(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn quotes_backslashes_and_quotes() {
        assert_eq!(quote_password(r"a'b\c").unwrap(), r"'a\'b\\c'");
        assert_eq!(quote_password(r"\'").unwrap(), r"'\\\''");
        assert!(quote_password("a\0b").is_err());
    }

    #[test]
    fn refuses_hostile_identifiers_and_addresses() {
        let bad_user = grant(&g("x' OR 1=1 --", "shop", "pw", &["127.0.0.2"]));
        assert!(bad_user.unwrap_err().message.contains("user name"));
        assert!(grant(&g("app", "shop`; DROP", "pw", &["127.0.0.2"])).is_err());
        assert!(grant(&g("app", "shop", "pw", &["%"])).is_err());
        assert!(grant(&g("app", "shop", "pw", &["127.0.0.2'; --"])).is_err());
        assert!(revoke(&g("app", "shop", "pw", &["localhost"])).is_err());
    }

    #[test]
    fn grant_covers_every_address_and_hides_nothing_else() {
        let sql = grant(&g("app", "shop", "pw", &["127.0.0.2", "127.0.0.3"])).unwrap();
        assert!(sql.contains("CREATE USER IF NOT EXISTS 'app'@'127.0.0.2' IDENTIFIED BY 'pw';"));
        assert!(sql.contains("GRANT ALL PRIVILEGES ON `shop`.* TO 'app'@'127.0.0.3';"));
        assert!(sql.ends_with("FLUSH PRIVILEGES;\n"));
        let rev = revoke(&g("app", "shop", "pw", &["127.0.0.2"])).unwrap();
        assert_eq!(
            rev,
            "DROP USER IF EXISTS 'app'@'127.0.0.2';\nFLUSH PRIVILEGES;\n"
        );
    }
}
