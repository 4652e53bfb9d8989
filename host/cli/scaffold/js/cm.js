// __NAME__: a Stratus configuration-management adapter. `prepare` writes the tool's inputs
// into the work directory (`__NAME__.conf`); `run` runs the tool and reports.
// componentize-js exports each WIT interface as the module export of its camelCase name.

import { cmHooks as hooks, log, writeText } from './.stratus/stratus_plugin.js';

export const cmHooks = hooks({
  prepare(ctx) {
    // CM hooks have no service context to render templates with: the inputs come from ctx.
    const lines = [
      `deployment = ${ctx.deployment}`,
      `tier = ${ctx.tier}`,
      `server = ${ctx.server.name} (${ctx.server.address})`,
      ...ctx.settings.map((s) => `setting.${s.key} = ${s.value}`),
    ];
    const path = `${ctx.workDir}/__NAME__.conf`;
    writeText(path, lines.join('\n') + '\n');
    log.info(`wrote ${path}`);
  },

  run(ctx) {
    log.info(`run on ${ctx.server.name}`);
    return { summary: `__NAME__ configured ${ctx.server.name}`, produced: [] };
  },
});
