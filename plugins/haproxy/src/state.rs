//! The plugin's own state in the service directory: the balanced node set (`nodes.txt`, one
//! `name address:port` line each) and the haproxy process generations that may still run
//! (`generations.txt`, one supervisor name such as `haproxy-3` per line).

use stratus_plugin_sdk::proxy::*;

/// One backend server as haproxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub port: u16,
}

impl Node {
    /// haproxy server names allow letters, digits and `-_.:`; anything else becomes `_`.
    pub fn of(n: &ProxyNode) -> Node {
        let name = n
            .server
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Node {
            name,
            address: n.server.address.clone(),
            port: n.port,
        }
    }

    pub fn server_line(&self) -> String {
        format!(
            "    server {} {}:{} check\n",
            self.name, self.address, self.port
        )
    }
}

const NODES: &str = "nodes.txt";
const GENERATIONS: &str = "generations.txt";

pub fn read_nodes(ctx: &ServiceContext) -> Result<Vec<Node>, HookError> {
    let path = files::service_path(ctx, NODES);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = files::read_to_string(&path)?;
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || HookError::fatal(format!("{}: bad line `{line}`", path.display()));
        let (name, addr) = line.split_once(' ').ok_or_else(bad)?;
        let (address, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        nodes.push(Node {
            name: name.into(),
            address: address.into(),
            port,
        });
    }
    Ok(nodes)
}

pub fn write_nodes(ctx: &ServiceContext, nodes: &[Node]) -> Result<(), HookError> {
    let text: String = nodes
        .iter()
        .map(|n| format!("{} {}:{}\n", n.name, n.address, n.port))
        .collect();
    files::write(files::service_path(ctx, NODES), text)
}

/// Supervisor names of the generations started and not yet seen to exit, oldest first.
pub fn read_generations(ctx: &ServiceContext) -> Result<Vec<String>, HookError> {
    let path = files::service_path(ctx, GENERATIONS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(files::read_to_string(&path)?
        .lines()
        .map(str::to_string)
        .collect())
}

pub fn write_generations(ctx: &ServiceContext, names: &[String]) -> Result<(), HookError> {
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    files::write(files::service_path(ctx, GENERATIONS), text)
}

/// The name for the next generation: one past the highest number ever listed.
pub fn next_generation(names: &[String]) -> String {
    let n = names
        .iter()
        .filter_map(|n| n.strip_prefix("haproxy-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("haproxy-{}", n + 1)
}
