// Fails on purpose, as the `fail` setting says (see plugin.toml).
import {
  serviceHooks as hooks,
  HookError,
  isFile,
  log,
  readText,
  renderFile,
  setting,
  withEnstratusCfg,
} from './.stratus/stratus_plugin.js';

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
    if (fail === 'plain-object') {
      throw { message: 'a plain object', retryable: true };
    }
    if (fail === 'escape') {
      renderFile(ctx, '../outside.conf', 'outside.conf');
    }
    const path = renderFile(ctx, 'cfg/ok.conf', 'ok.conf', { greeting: 'hi' });
    log.info(`wrote ${path}`);
    let cfg;
    const first = withEnstratusCfg(ctx, (p) => {
      cfg = p;
      return readText(p).split('\n')[0];
    });
    if (isFile(cfg)) throw new HookError('enstratus.cfg outlived its block');
    log.info(`enstratus.cfg began with ${first}`);
  },
});
