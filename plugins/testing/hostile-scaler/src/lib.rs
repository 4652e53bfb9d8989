//! Test-only scaling rule that misbehaves as its tier's name says: `loop` spins forever,
//! `alloc` allocates without end, `sleep` waits a
//! minute in a WASI call, `count` returns one vote too many, `range` votes 7, `wasi`
//! looks for files, environment, arguments, the network and the clock and returns what it found as its
//! error, `bigerr` returns a 10 MiB error full of control characters. Any other tier gets
//! one 0 per server.

wit_bindgen::generate!({ world: "scaler", path: "../../../wit" });

use exports::stratus::plugin::scale_rule::{Guest, TierWindow};

struct HostileScaler;

/// What the sandbox let this component see, one `what: result` item per attempt.
fn snoop() -> String {
    let mut seen = Vec::new();
    for path in ["/etc/passwd", "/proc/self/environ", ".", "/"] {
        let r = match std::fs::read_to_string(path) {
            Ok(text) => format!("read {} bytes", text.len()),
            Err(e) => match std::fs::read_dir(path) {
                Ok(d) => format!("listed {} entries", d.count()),
                Err(_) => format!("refused ({e})"),
            },
        };
        seen.push(format!("{path}: {r}"));
    }
    seen.push(format!("env: {} variables", std::env::vars_os().count()));
    seen.push(format!("args: {}", std::env::args_os().count()));
    seen.push(format!("cwd: {:?}", std::env::current_dir().ok()));
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    seen.push(format!("clock: {:?}", clock.map(|d| d.as_millis())));
    let net = std::net::TcpStream::connect("127.0.0.1:22").map(|_| "connected");
    seen.push(format!("net: {:?}", net.map_err(|e| e.kind())));
    seen.join("; ")
}

impl Guest for HostileScaler {
    fn scale_check(window: TierWindow) -> Result<Vec<i8>, String> {
        let n = window.servers.len();
        match window.tier.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(vec![0; n])
            }
            "count" => Ok(vec![0; n + 1]),
            "range" => Ok(vec![7; n]),
            "wasi" => Err(snoop()),
            "bigerr" => {
                let chunk = "\u{1b}[31mred\u{7}\u{0}\r\n";
                Err(chunk.repeat((10 << 20) / chunk.len()))
            }
            _ => Ok(vec![0; n]),
        }
    }
}

export!(HostileScaler);
