// Fails on purpose, as the `fail` setting says (see plugin.toml).
import { serviceHooks as hooks, HookError, log, renderFile, setting } from './.stratus/stratus_plugin.js';

export const serviceHooks = hooks({
  configure(ctx) {
    const fail = setting(ctx, 'fail', 'none');
    if (fail === 'retryable') {
      throw new HookError('the database is not up yet', { retryable: true });
    }
    if (fail === 'type-error') {
      null.greeting();
    }
    if (fail === 'unknown-variable') {
      renderFile(ctx, 'cfg/bad.conf', 'bad.conf');
    }
    const path = renderFile(ctx, 'cfg/ok.conf', 'ok.conf', { greeting: 'hi' });
    log.info(`wrote ${path}`);
  },
});
