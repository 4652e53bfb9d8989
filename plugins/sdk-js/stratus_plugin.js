// The Stratus plugin SDK for JavaScript, over the bindings componentize-js 0.23.0 generates.
//
// A plugin module exports one object per interface its world exports, named in camelCase
// (`serviceHooks`; `serviceHooks` and `proxyHooks` for a load balancer; `cmHooks`), made with
// the wrapper of the same name here:
//
//   import { serviceHooks as hooks, renderFile } from './.stratus/stratus_plugin.js';
//   export const serviceHooks = hooks({
//     configure(ctx) { renderFile(ctx, 'cfg/app.conf', 'app.conf'); },
//   });
//
// Every hook is wrapped: a thrown `HookError` becomes the WIT `hook-error` with its message and
// `retryable`, anything else thrown a non-retryable `hook-error` naming its type, message and
// where it was thrown. Hooks an object leaves out succeed (`healthCheck` reports `unknown`).
// Templates are rendered by the host (`render-template`), so JavaScript plugins get exactly
// the variables and errors of plugins in any other language. Files are read and written
// through WASI's filesystem (StarlingMonkey has no file API), which the `*-js` worlds of
// plugins/sdk-js/wit/js.wit import.

import * as host from 'stratus:plugin/host@0.1.1';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

/** A failure a hook reports on purpose; `retryable: true` asks the engine to try again later. */
export class HookError extends Error {
  constructor(message, { retryable = false } = {}) {
    super(String(message));
    this.name = 'HookError';
    this.retryable = Boolean(retryable);
  }
}

/** `plugin.js:12:5`: the first frame of a stack trace (StarlingMonkey's `fn@file:line:col`). */
function where(error) {
  const frame = String(error?.stack ?? '').split('\n').find((line) => line.includes('@'));
  if (!frame) return '';
  return frame.slice(frame.indexOf('@') + 1).split('/').pop();
}

/** The WIT `hook-error` for a thrown value. */
function toWit(thrown) {
  if (thrown instanceof HookError) {
    return { message: thrown.message, retryable: thrown.retryable };
  }
  if (thrown instanceof Error) {
    const at = where(thrown);
    const text = `${thrown.name}: ${thrown.message}`;
    return { message: at ? `${text} (at ${at})` : text, retryable: false };
  }
  if (thrown && typeof thrown === 'object' && typeof thrown.message === 'string') {
    // componentize-js's own idiom: the thrown object is the `hook-error` record.
    return { message: thrown.message, retryable: thrown.retryable === true };
  }
  return { message: `thrown: ${String(thrown)}`, retryable: false };
}

/** componentize-js turns a value thrown from a `result`-returning export into its error. */
function wrap(name, hook) {
  return function (...args) {
    try {
      return hook.apply(this, args);
    } catch (thrown) {
      throw toWit(thrown);
    }
  };
}

function wrapAll(defaults, hooks) {
  const out = {};
  for (const [name, fallback] of Object.entries(defaults)) {
    const hook = hooks?.[name] ?? fallback;
    if (typeof hook !== 'function') {
      throw new TypeError(`hook ${name} must be a function`);
    }
    out[name] = wrap(name, hook);
  }
  const unknown = Object.keys(hooks ?? {}).filter((name) => !(name in defaults));
  if (unknown.length > 0) {
    // A misspelt hook would otherwise never run, silently.
    throw new TypeError(`unknown hooks: ${unknown.join(', ')} (known: ${Object.keys(defaults).join(', ')})`);
  }
  return out;
}

const nothing = () => {};

/** The `service-hooks` export: `export const serviceHooks = serviceHooks({ ... })`. */
export function serviceHooks(hooks) {
  return wrapAll(
    {
      installService: nothing,
      installDataSource: nothing,
      configure: nothing,
      start: nothing,
      stop: nothing,
      grantDatabaseAccess: nothing,
      revokeDatabaseAccess: nothing,
      healthCheck: () => ({ status: 'unknown', message: 'this plugin has no health check' }),
    },
    hooks,
  );
}

/** The `proxy-hooks` export of a load balancer. */
export function proxyHooks(hooks) {
  return wrapAll({ startProxy: nothing, removeNodes: nothing }, hooks);
}

/** The `cm-hooks` export of a configuration-management adapter. */
export function cmHooks(hooks) {
  return wrapAll(
    { prepare: nothing, run: () => ({ summary: 'nothing to do', produced: [] }) },
    hooks,
  );
}

// --- the context ------------------------------------------------------------------------

/** The deployment file's setting `key` (the last one wins), or `fallback`. */
export function setting(ctx, key, fallback = undefined) {
  let found = fallback;
  for (const s of ctx.settings) {
    if (s.key === key) found = s.value;
  }
  return found;
}

/** The service's port `name` (`privatePort`, `publicPort`); HookError if absent. */
export function port(ctx, name) {
  const found = ctx.ports.find((p) => p.name === name);
  if (found) return found;
  const names = ctx.ports.map((p) => p.name).join(', ') || 'none';
  throw new HookError(`the service has no port \`${name}\` (it has: ${names})`);
}

/** The service's credential `name` (`user`, `password`); HookError if absent. */
export function credential(ctx, name) {
  const found = ctx.credentials.find((c) => c.name === name);
  if (found) return found;
  throw new HookError(`the service has no credential \`${name}\``);
}

/** The dependency on `service` (or the first); `dataSource: true/false` narrows the kind. */
export function dependency(ctx, service = undefined, { dataSource = undefined } = {}) {
  const found = ctx.dependencies.find(
    (d) =>
      (service === undefined || d.service === service) &&
      (dataSource === undefined || (d.kind === 'data-source') === Boolean(dataSource)),
  );
  if (found) return found;
  const what = service === undefined ? 'any service' : `\`${service}\``;
  throw new HookError(`the service has no dependency on ${what}`);
}

/** `<serviceDir>/<relative>`; `relative` must stay inside (no absolute path, no `..`). */
export function servicePath(ctx, relative) {
  const rel = String(relative);
  if (rel === '' || rel.startsWith('/') || rel.split('/').includes('..')) {
    throw new HookError(`\`${rel}\` is not a path relative to the service directory`);
  }
  return `${ctx.serviceDir.replace(/\/+$/, '')}/${rel}`;
}

// --- host errors --------------------------------------------------------------------------

/** The text of an error an import threw: componentize-js puts a `result`'s error in `payload`. */
function reason(thrown) {
  if (thrown && typeof thrown === 'object' && 'payload' in thrown) return String(thrown.payload);
  return String(thrown?.message ?? thrown);
}

function hostCall(what, call) {
  try {
    return call();
  } catch (thrown) {
    throw new HookError(what ? `${what}: ${reason(thrown)}` : reason(thrown));
  }
}

// --- files (WASI filesystem) -------------------------------------------------------------

/** WASI error codes as the messages a reader expects. */
const ERRNO = {
  access: 'Permission denied',
  exist: 'File exists',
  'is-directory': 'Is a directory',
  'no-entry': 'No such file or directory',
  'not-directory': 'Not a directory',
  'not-permitted': 'Operation not permitted',
  'insufficient-space': 'No space left on device',
  loop: 'Too many levels of symbolic links',
  'read-only': 'Read-only file system',
};

function fsError(action, path, thrown) {
  const code = reason(thrown);
  return new HookError(`${action} ${path}: ${ERRNO[code] ?? code}`);
}

/** The granted directory holding absolute `path` and the path relative to it. */
function locate(path) {
  let best;
  for (const [dir, name] of getDirectories()) {
    const base = name.replace(/\/+$/, '');
    if ((path === base || path.startsWith(`${base}/`)) && (!best || base.length > best[1].length)) {
      best = [dir, base];
    }
  }
  if (!best) throw new HookError(`${path} is not inside a directory this plugin was granted`);
  return { dir: best[0], rel: path.slice(best[1].length + 1) || '.' };
}

/** Opens `path` without following a symbolic link (the sandbox refuses links out anyway). */
function open(path, openFlags, descriptorFlags, action) {
  const { dir, rel } = locate(path);
  try {
    return dir.openAt({}, rel, openFlags, descriptorFlags);
  } catch (thrown) {
    throw fsError(action, path, thrown);
  }
}

const CHUNK = 65536n;

/** The whole file at absolute `path` as UTF-8 text. */
export function readText(path) {
  const file = open(path, {}, { read: true }, 'reading');
  const parts = [];
  let offset = 0n;
  try {
    for (;;) {
      const [bytes, end] = file.read(CHUNK, offset);
      parts.push(bytes);
      offset += BigInt(bytes.length);
      if (end || bytes.length === 0) break;
    }
  } catch (thrown) {
    throw fsError('reading', path, thrown);
  }
  const all = new Uint8Array(Number(offset));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(all);
  } catch {
    throw new HookError(`reading ${path}: not UTF-8 text`);
  }
}

function writeAll(file, bytes, path) {
  let offset = 0;
  try {
    while (offset < bytes.length) {
      offset += Number(file.write(bytes.subarray(offset), BigInt(offset)));
    }
  } catch (thrown) {
    throw fsError('writing', path, thrown);
  }
}

/** Writes `text` to absolute `path` through a fresh temporary file renamed over it: a reader
 * never sees half a file, and a link a program planted at either name is replaced, never
 * written through. */
export function writeText(path, text) {
  const { dir, rel } = locate(path);
  const slash = rel.lastIndexOf('/');
  const tmpRel = `${rel.slice(0, slash + 1)}.${rel.slice(slash + 1)}.stratus-tmp`;
  const tmpPath = `${path.slice(0, path.length - rel.length)}${tmpRel}`;
  removeFile(tmpPath);
  const file = open(tmpPath, { create: true, exclusive: true }, { write: true }, 'writing');
  writeAll(file, new TextEncoder().encode(String(text)), path);
  try {
    dir.renameAt(tmpRel, dir, rel);
  } catch (thrown) {
    removeFile(tmpPath);
    throw fsError('writing', path, thrown);
  }
}

/** Whether absolute `path` is a regular file (a symbolic link is not followed, so it is not). */
export function isFile(path) {
  const { dir, rel } = locate(path);
  try {
    return dir.statAt({}, rel).type === 'regular-file';
  } catch {
    return false;
  }
}

/** Removes the file at absolute `path`; a missing file is not an error. */
export function removeFile(path) {
  const { dir, rel } = locate(path);
  try {
    dir.unlinkFileAt(rel);
  } catch (thrown) {
    if (reason(thrown) !== 'no-entry') throw fsError('removing', path, thrown);
  }
}

// --- templates ----------------------------------------------------------------------------

const ESCAPINGS = ['none', 'toml-string', 'json-string'];

function pairs(extra) {
  if (extra === undefined || extra === null) return [];
  const entries = Array.isArray(extra) ? extra : Object.entries(extra);
  return entries.map(([k, v]) => [String(k), String(v)]);
}

/**
 * `text` with each `{{ name }}` replaced by the hook's context variable (or `extra`'s, an
 * object or list of pairs, which wins), escaped as `escaping` says (`none`, `toml-string`,
 * `json-string`). The host renders it; an unknown variable throws a HookError naming it and
 * the line, e.g. "line 2: unknown template variable `port.http.privat`".
 */
export function render(text, extra = undefined, escaping = 'none') {
  if (!ESCAPINGS.includes(escaping)) {
    throw new HookError(`unknown escaping \`${escaping}\` (expected one of: ${ESCAPINGS.join(', ')})`);
  }
  return hostCall('', () => host.renderTemplate(String(text), pairs(extra), escaping));
}

/**
 * Renders `<serviceDir>/<template>` into `<serviceDir>/<output>` and returns the output's
 * path. Errors name the template: "rendering cfg/app.conf: line 3: unknown template variable `x`".
 */
export function renderFile(ctx, template, output, extra = undefined, escaping = 'none') {
  const source = servicePath(ctx, template);
  const target = servicePath(ctx, output);
  const text = readText(source);
  let rendered;
  try {
    rendered = render(text, extra, escaping);
  } catch (error) {
    throw new HookError(`rendering ${template}: ${error.message}`);
  }
  writeText(target, rendered);
  return target;
}

/**
 * Writes the classic `<serviceDir>/enstratus.cfg` (it holds passwords), calls `fn(path)` and
 * returns what it returns; the file is overwritten with zeros and removed afterwards, also
 * when `fn` throws.
 */
export function withEnstratusCfg(ctx, fn) {
  const text = hostCall('enstratus.cfg', () => host.enstratusCfg());
  const path = servicePath(ctx, 'enstratus.cfg');
  try {
    writeText(path, text);
    return fn(path);
  } finally {
    erase(path);
  }
}

function erase(path) {
  try {
    const file = open(path, {}, { write: true }, 'erasing');
    const info = file.stat();
    if (info.type === 'regular-file') writeAll(file, new Uint8Array(Number(info.size)), path);
  } catch {
    // Nothing to overwrite (never written, or already gone): removing is what remains.
  }
  removeFile(path);
}

// --- logging and status ------------------------------------------------------------------

/** Records in the server's hook log: `log.info('wrote x')`. */
export const log = Object.freeze({
  trace: (message) => host.log('trace', String(message)),
  debug: (message) => host.log('debug', String(message)),
  info: (message) => host.log('info', String(message)),
  warn: (message) => host.log('warn', String(message)),
  error: (message) => host.log('error', String(message)),
});

/** The one-line status operators see for this hook while it runs. */
export function setStatus(message) {
  host.setStatus(String(message));
}

// --- programs and processes ---------------------------------------------------------------

/**
 * Runs an allowed program (absolute path, no shell) to completion and returns its output
 * (`exitCode`, `stdout`, `stderr`, `truncated`). `stdinFile`/`stdoutFile` connect standard
 * input/output to files in granted directories. With `check` (the default), an exit other
 * than 0 throws a HookError with the end of its stderr.
 */
export function run(
  program,
  args = [],
  { env, workingDir, timeoutMs = 0, stdin, stdinFile, stdoutFile, check = true } = {},
) {
  const cmd = {
    program: String(program),
    args: args.map(String),
    env: pairs(env),
    workingDir,
    timeoutMs,
    stdin,
  };
  const out = hostCall(`running ${program}`, () =>
    stdinFile === undefined && stdoutFile === undefined
      ? host.run(cmd)
      : host.runWithFiles(cmd, { stdinFile, stdoutFile }),
  );
  if (check && out.exitCode !== 0) {
    const how = out.exitCode === undefined ? 'was killed by a signal' : `exited with ${out.exitCode}`;
    throw new HookError(`${program} ${how}: ${out.stderr.slice(-1000).trim()}`);
  }
  return out;
}

/** Starts `program` under the supervisor as process `name` and returns its pid. */
export function spawn(name, program, args = [], { env, workingDir } = {}) {
  const spec = { name: String(name), program: String(program), args: args.map(String), env: pairs(env), workingDir };
  return hostCall(`starting ${name} (${program})`, () => host.spawn(spec));
}

/** SIGTERM, then SIGKILL after `graceMs`; stopping an unknown or exited process succeeds. */
export function stopProcess(name, graceMs = 5000) {
  hostCall(`stopping ${name}`, () => host.stopProcess(String(name), graceMs));
}

/** The pid of supervised process `name` if it runs, else undefined. */
export function runningPid(name) {
  const state = host.queryProcess(String(name));
  return state.tag === 'running' ? state.val : undefined;
}

/** True once `address:port` accepts a TCP connection, false when `timeoutMs` ran out. */
export function waitForPort(address, port, timeoutMs) {
  return hostCall(`waiting for ${address}:${port}`, () => host.waitForPort(String(address), port, timeoutMs));
}
