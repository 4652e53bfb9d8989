"""__NAME__: a Stratus load-balancer plugin. `configure` renders `cfg/__NAME__.conf` into the
service directory; `start_proxy` gets the whole node set after every change.

componentize-py looks for a class named after each exported interface (`ServiceHooks`,
`ProxyHooks`).
"""

import os

import stratus_plugin as stratus
from stratus_plugin import HealthReport, HealthStatus, log


class ServiceHooks(stratus.ServiceHooks):
__SERVICE_HOOKS__

class ProxyHooks(stratus.ProxyHooks):
    def start_proxy(self, ctx, nodes):
        log.info(f"start-proxy: balancing over {len(nodes)} nodes")

    def remove_nodes(self, ctx, nodes):
        log.info(f"remove-nodes: {len(nodes)} nodes leave")
