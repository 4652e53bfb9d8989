//! The greeter's configuration file as its plugin renders it: flat `key = value` lines (a TOML
//! subset: bare numbers or double-quoted strings with `\"` and `\\` escapes, `#` comments).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// Everything the greeter needs; the password is kept out of `Debug`.
pub struct Config {
    pub listen_address: IpAddr,
    pub listen_port: u16,
    pub server_name: String,
    pub db_host: IpAddr,
    pub db_port: u16,
    pub db_user: String,
    pub db_password: String,
    pub db_name: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &(self.listen_address, self.listen_port))
            .field("server_name", &self.server_name)
            .field("db", &(self.db_host, self.db_port, &self.db_name))
            .field("db_user", &self.db_user)
            .field("db_password", &"<redacted>")
            .finish()
    }
}

/// Parses the file's text; errors name the line or key, never a value (it may be a password).
pub fn parse(text: &str) -> Result<Config, String> {
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`", n + 1))?;
        let v = unquote(v.trim()).ok_or_else(|| format!("line {}: bad quoting", n + 1))?;
        map.insert(k.trim().to_string(), v);
    }
    let get = |k: &str| {
        map.get(k)
            .cloned()
            .ok_or_else(|| format!("missing key `{k}`"))
    };
    Ok(Config {
        listen_address: parse_as(&get("listen_address")?, "listen_address")?,
        listen_port: parse_as(&get("listen_port")?, "listen_port")?,
        server_name: get("server_name")?,
        db_host: parse_as(&get("db_host")?, "db_host")?,
        db_port: parse_as(&get("db_port")?, "db_port")?,
        db_user: get("db_user")?,
        db_password: get("db_password")?,
        db_name: get("db_name")?,
    })
}

fn parse_as<T: std::str::FromStr>(v: &str, key: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("key `{key}`: `{v}` is not valid"))
}

/// `"a\"b"` → `a"b`; a bare value is taken as is. `None` for an unterminated string.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# rendered by the app plugin
listen_address = "127.0.0.5"
listen_port = 8080
server_name = "shop-app-1"
db_host = "127.0.0.2"
db_port = 3306
db_user = "app"
db_password = "p\"w\\d"
db_name = "hello"
"#;

    #[test]
    fn parses_every_key_and_unescapes() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen_address.to_string(), "127.0.0.5");
        assert_eq!(c.listen_port, 8080);
        assert_eq!(c.db_port, 3306);
        assert_eq!(c.db_password, "p\"w\\d");
        assert_eq!(c.db_name, "hello");
        assert!(!format!("{c:?}").contains("p\"w"));
    }

    #[test]
    fn missing_key_and_bad_values_are_named() {
        let e = parse(&GOOD.replace("db_name = \"hello\"", "")).unwrap_err();
        assert_eq!(e, "missing key `db_name`");
        let e = parse(&GOOD.replace("8080", "80800")).unwrap_err();
        assert!(e.contains("listen_port"), "{e}");
        let e = parse("db_password = \"open").unwrap_err();
        assert!(e.contains("line 1") && !e.contains("open"), "{e}");
    }
}
