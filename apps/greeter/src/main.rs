//! A small real HTTP service for the three-tier example: `GET /` answers with this server's
//! name and the rows of table `greetings`, read from MariaDB over a connection made from this
//! server's own address (so the database's per-address grant is what lets it in).
//!
//! For tests of metrics and scaling rules it also burns one core while a file named `burn`
//! exists in its service directory, beside its config file (`mnt/services/a<id>/burn` under
//! the server root), looking every 100 ms and for at most 10 minutes of CPU in all (see
//! `burn.rs`).

mod burn;
mod config;

use config::Config;
use mysql::prelude::Queryable;
use std::net::SocketAddr;
use std::time::Duration;
use tiny_http::{Header, Response, Server};

fn main() {
    let path = match std::env::args().skip_while(|a| a != "--config").nth(1) {
        Some(p) => p,
        None => exit("usage: greeter --config <file>"),
    };
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| exit(&format!("reading {path}: {e}")));
    let cfg = config::parse(&text).unwrap_or_else(|e| exit(&format!("{path}: {e}")));
    let listen = SocketAddr::new(cfg.listen_address, cfg.listen_port);
    let server =
        Server::http(listen).unwrap_or_else(|e| exit(&format!("listening on {listen}: {e}")));
    println!("greeter {} listening on {listen}", cfg.server_name);
    burn::start(std::path::Path::new(&path));
    for request in server.incoming_requests() {
        let (status, body) = answer(&cfg, request.method().as_str(), request.url());
        println!("{} {} {status}", request.method(), request.url());
        let json = Header::from_bytes("Content-Type", "application/json").expect("static header");
        let response = Response::from_string(body)
            .with_status_code(status)
            .with_header(json);
        if let Err(e) = request.respond(response) {
            println!("responding: {e}");
        }
    }
}

fn exit(message: &str) -> ! {
    eprintln!("greeter: {message}");
    std::process::exit(2)
}

/// Status and JSON body for one request.
fn answer(cfg: &Config, method: &str, url: &str) -> (u16, String) {
    if method != "GET" || url != "/" {
        return (404, "{\"error\":\"not found\"}".into());
    }
    match greetings(cfg) {
        Ok(rows) => {
            let rows: Vec<String> = rows
                .iter()
                .map(|(id, m)| format!("{{\"id\":{id},\"message\":{}}}", quote(m)))
                .collect();
            let body = format!(
                "{{\"server\":{},\"greetings\":[{}]}}",
                quote(&cfg.server_name),
                rows.join(",")
            );
            (200, body)
        }
        Err(e) => (
            503,
            format!(
                "{{\"server\":{},\"error\":{}}}",
                quote(&cfg.server_name),
                quote(&e)
            ),
        ),
    }
}

/// Reads the table over a fresh connection per request, so a revoked grant shows at once.
fn greetings(cfg: &Config) -> Result<Vec<(i64, String)>, String> {
    let db = format!("database {}:{}", cfg.db_host, cfg.db_port);
    let timeout = Some(Duration::from_secs(3));
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(cfg.db_host.to_string()))
        .tcp_port(cfg.db_port)
        .user(Some(&cfg.db_user))
        .pass(Some(&cfg.db_password))
        .db_name(Some(&cfg.db_name))
        .bind_address(Some(SocketAddr::new(cfg.listen_address, 0)))
        .tcp_connect_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .prefer_socket(false);
    // The driver's messages name the user and address but never the password.
    let mut conn = mysql::Conn::new(opts).map_err(|e| format!("{db}: {e}"))?;
    conn.query("SELECT id, message FROM greetings ORDER BY id")
        .map_err(|e| format!("{db}: {e}"))
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_json() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
