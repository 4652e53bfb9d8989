// The polyglot example's `api` tier in JavaScript: renders cfg/greeter.toml with the host's
// template variables and runs the greeter shipped in the package under the supervisor.

import {
  serviceHooks as hooks,
  HookError,
  log,
  port,
  isFile,
  renderFile,
  runningPid,
  servicePath,
  spawn,
  stopProcess,
  waitForPort,
} from './.stratus/stratus_plugin.js';

// Supervisor name of the greeter process.
const PROCESS = 'greeter';
// The greeter inside the service directory (allowed as `service:bin/greeter`).
const BINARY = 'bin/greeter';
// How long `start` waits for the port: below the manifest's 20 s hook timeout.
const START_WAIT_MS = 15000;

function binary(ctx) {
  const path = servicePath(ctx, BINARY);
  if (!isFile(path)) {
    throw new HookError(`${path} is missing: the package must ship the greeter binary`);
  }
  return path;
}

export const serviceHooks = hooks({
  installService(ctx) {
    binary(ctx);
  },

  configure(ctx) {
    const path = renderFile(ctx, 'cfg/greeter.toml', 'greeter.toml', undefined, 'toml-string');
    log.info(`wrote ${path}`);
  },

  start(ctx) {
    const http = port(ctx, 'http').privatePort;
    if (runningPid(PROCESS) === undefined) {
      const config = servicePath(ctx, 'greeter.toml');
      const pid = spawn(PROCESS, binary(ctx), ['--config', config]);
      log.info(`started greeter (pid ${pid})`);
    }
    if (!waitForPort(ctx.server.address, http, START_WAIT_MS)) {
      // Still starting (or crashing and being restarted): let the engine call again.
      throw new HookError(
        `greeter does not accept on ${ctx.server.address}:${http} yet; see its process log`,
        { retryable: true },
      );
    }
  },

  stop() {
    stopProcess(PROCESS);
  },

  healthCheck(ctx) {
    const http = port(ctx, 'http').privatePort;
    const pid = runningPid(PROCESS);
    if (pid === undefined) return { status: 'critical', message: 'greeter is not running' };
    if (waitForPort(ctx.server.address, http, 1000)) {
      return { status: 'ok', message: `greeter (pid ${pid}) accepts on port ${http}` };
    }
    return { status: 'critical', message: `greeter (pid ${pid}) runs but port ${http} does not accept` };
  },
});
