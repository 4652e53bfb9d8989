//! Test-only cloud driver that misbehaves as its `attack` setting says, and reports what it
//! saw as its error message (the host redacts and cuts it like any driver's):
//! - `get`: one GET of the `url` setting (another origin, another scheme, …);
//! - `follow`: GET `url` and follow redirects by hand (up to 5);
//! - `read-all`: GET `url` and read the whole body, however large;
//! - `many`: GET `url` 100 times;
//! - `loop`: spin forever; `sleep`: wait a minute in a WASI call;
//! - `leak`: put every secret and the bootstrap in its error (launch: in the handle's id);
//! - `snoop`: look for files, environment, arguments and sockets.
//!
//! Without an attack it behaves: launch gives `i-hostile`, describe says running.

wit_bindgen::generate!({ world: "cloud-driver", path: "../../../wit" });

use exports::stratus::plugin::cloud_servers::{
    DriverConfig, DriverError, Guest, LaunchRequest, ServerHandle, ServerState,
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

struct HostileDriver;

fn setting<'a>(config: &'a DriverConfig, key: &str) -> &'a str {
    config
        .settings
        .iter()
        .find(|s| s.key == key)
        .map_or("", |s| s.value.as_str())
}

fn report(message: String) -> DriverError {
    DriverError {
        message,
        retryable: false,
    }
}

/// What one GET gave: the status, the Location header, the bytes read and how reading ended.
struct Got {
    status: u16,
    location: Option<String>,
    read: usize,
    ended: String,
}

fn get(url: &str, read_body: bool) -> Result<Got, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((other, rest)) => (Scheme::Other(other.to_owned()), rest),
        None => return Err(format!("bad url {url}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).unwrap();
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| "scheme refused by set-scheme".to_string())?;
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some(path)).unwrap();
    let pending = outgoing_handler::handle(request, None).map_err(|e| code(&e))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(code(&e)),
        _ => return Err("no response".into()),
    };
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let mut got = Got {
        status,
        location,
        read: 0,
        ended: "not read".into(),
    };
    if read_body {
        let body = response.consume().unwrap();
        let stream = body.stream().unwrap();
        got.ended = loop {
            match stream.blocking_read(1 << 20) {
                Ok(chunk) => got.read += chunk.len(),
                Err(StreamError::Closed) => break "closed".into(),
                Err(StreamError::LastOperationFailed(e)) => {
                    break match wasip2::http::types::http_error_code(&e) {
                        Some(c) => code(&c),
                        None => e.to_debug_string(),
                    };
                }
            }
        };
    }
    Ok(got)
}

fn code(e: &ErrorCode) -> String {
    format!("{e:?}")
}

fn describe(result: Result<Got, String>) -> String {
    match result {
        Ok(g) => format!(
            "status {} location {:?} read {} ended {}",
            g.status, g.location, g.read, g.ended
        ),
        Err(e) => format!("error {e}"),
    }
}

fn follow(mut url: String) -> String {
    let mut steps = Vec::new();
    for _ in 0..5 {
        let got = get(&url, false);
        let next = got.as_ref().ok().and_then(|g| g.location.clone());
        steps.push(format!("{url}: {}", describe(got)));
        match next {
            Some(location) => url = location,
            None => break,
        }
    }
    steps.join(" | ")
}

fn snoop() -> String {
    let mut seen = Vec::new();
    for path in ["/etc/passwd", "/proc/self/environ", "."] {
        let r = match std::fs::read_dir(path) {
            Ok(d) => format!("listed {} entries", d.count()),
            Err(_) => match std::fs::read(path) {
                Ok(b) => format!("read {} bytes", b.len()),
                Err(e) => format!("refused ({e})"),
            },
        };
        seen.push(format!("{path}: {r}"));
    }
    seen.push(format!("env: {}", std::env::vars_os().count()));
    seen.push(format!("args: {}", std::env::args_os().count()));
    let tcp = std::net::TcpStream::connect("127.0.0.1:22");
    seen.push(format!(
        "tcp: {}",
        if tcp.is_ok() { "connected" } else { "refused" }
    ));
    seen.join("; ")
}

/// Runs the attack of `config`; None when it has none.
fn attack(config: &DriverConfig, bootstrap: &str) -> Option<String> {
    let url = setting(config, "url").to_owned();
    Some(match setting(config, "attack") {
        "get" => describe(get(&url, false)),
        "follow" => follow(url),
        "read-all" => describe(get(&url, true)),
        "many" => {
            let mut ok = 0;
            let mut first_error = None;
            for _ in 0..100 {
                match get(&url, true) {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            format!("{ok} answered, first error {first_error:?}")
        }
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            "slept".into()
        }
        "leak" => {
            let secrets: Vec<String> = config
                .secrets
                .iter()
                .map(|s| format!("{}={}", s.name, s.value))
                .collect();
            format!("secrets {} bootstrap {bootstrap}", secrets.join(" "))
        }
        "snoop" => snoop(),
        _ => return None,
    })
}

impl Guest for HostileDriver {
    fn launch_server(req: LaunchRequest) -> Result<ServerHandle, DriverError> {
        if setting(&req.config, "attack") == "leak-handle" {
            let id = req
                .config
                .secrets
                .first()
                .map_or(String::new(), |s| s.value.clone());
            return Ok(ServerHandle { id, address: None });
        }
        match attack(&req.config, &req.bootstrap) {
            Some(seen) => Err(report(seen)),
            None => Ok(ServerHandle {
                id: "i-hostile".into(),
                address: Some("127.0.0.9".into()),
            }),
        }
    }

    fn describe_server(
        _handle: ServerHandle,
        config: DriverConfig,
    ) -> Result<ServerState, DriverError> {
        match attack(&config, "") {
            Some(seen) => Err(report(seen)),
            None => Ok(ServerState::Running),
        }
    }

    fn terminate_server(_handle: ServerHandle, config: DriverConfig) -> Result<(), DriverError> {
        match attack(&config, "") {
            Some(seen) => Err(report(seen)),
            None => Ok(()),
        }
    }
}

export!(HostileDriver);
