// __NAME__: a Stratus load-balancer plugin. `configure` renders `cfg/__NAME__.conf` into the
// service directory; `startProxy` gets the whole node set after every change.
// componentize-js exports each WIT interface as the module export of its camelCase name.

import {
  serviceHooks as service,
  proxyHooks as proxy,
  isFile,
  log,
  renderFile,
  servicePath,
  setting,
} from './.stratus/stratus_plugin.js';

export const serviceHooks = service({
__SERVICE_HOOKS__});

export const proxyHooks = proxy({
  startProxy(ctx, nodes) {
    log.info(`start-proxy: balancing over ${nodes.length} nodes`);
  },

  removeNodes(ctx, nodes) {
    log.info(`remove-nodes: ${nodes.length} nodes leave`);
  },
});
