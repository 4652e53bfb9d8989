//! __NAME__: a Stratus load-balancer plugin. `configure` renders `cfg/__NAME__.conf` into the
//! service directory; `start-proxy` gets the whole node set after every change.

use stratus_plugin_sdk::proxy::*;

struct Plugin;

impl ServiceGuest for Plugin {
__SERVICE_HOOKS__}

impl ProxyGuest for Plugin {
    fn start_proxy(_ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        log::info(&format!("start-proxy: balancing over {} nodes", nodes.len()));
        Ok(())
    }

    fn remove_nodes(_ctx: ServiceContext, nodes: Vec<ProxyNode>) -> Result<(), HookError> {
        log::info(&format!("remove-nodes: {} nodes leave", nodes.len()));
        Ok(())
    }
}

stratus_plugin_sdk::export_proxy!(Plugin);
