//! __NAME__: a Stratus service plugin. `configure` renders `cfg/__NAME__.conf` into the
//! service directory; the other hooks of the `service` world log what they were asked.

use stratus_plugin_sdk::service::*;

struct Plugin;

impl Guest for Plugin {
__SERVICE_HOOKS__}

stratus_plugin_sdk::export_service!(Plugin);
