// __NAME__: a Stratus service plugin. `configure` renders `cfg/__NAME__.conf` into the
// service directory; the other hooks of the `service` world log what they were asked.
// componentize-js exports each WIT interface as the module export of its camelCase name.

import {
  serviceHooks as hooks,
  isFile,
  log,
  renderFile,
  servicePath,
  setting,
} from './.stratus/stratus_plugin.js';

export const serviceHooks = hooks({
__SERVICE_HOOKS__});
