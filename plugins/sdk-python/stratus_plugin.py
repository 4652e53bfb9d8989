"""The Stratus plugin SDK for Python, over the bindings componentize-py 0.25.1 generates.

A plugin module (e.g. `app.py`) defines a class named after each interface its world exports
(`ServiceHooks`; `ServiceHooks` and `ProxyHooks` for a load balancer; `CmHooks`), subclassing
the base class of the same name here:

    import stratus_plugin as stratus

    class ServiceHooks(stratus.ServiceHooks):
        def configure(self, ctx):
            stratus.render_file(ctx, "cfg/app.conf", "app.conf")

Every hook method of such a subclass is wrapped: `HookError` becomes the WIT `hook-error`
with its message and `retryable`, and any other exception a non-retryable `hook-error`
naming its type, message and the line that raised it. Hooks a class does not define succeed
(`health_check` reports UNKNOWN). Templates are rendered by the host (`render-template`),
so Python plugins get exactly the variables and errors of plugins in any other language.
"""

import contextlib
import functools
import os
import stat
import traceback
from typing import Iterator, Mapping, Optional, Sequence, Tuple, Union

from componentize_py_types import Err
from wit_world.imports import host, types

# Re-exported so plugins need not import the generated modules for common values.
HealthReport = types.HealthReport
HealthStatus = types.HealthStatus
CmReport = types.CmReport
ServiceContext = types.ServiceContext
CmContext = types.CmContext

# The context of any hook: a service or proxy hook's, or a CM hook's.
Context = Union[types.ServiceContext, types.CmContext]
# Extra template variables: a mapping or a sequence of (name, value) pairs.
Extra = Optional[Union[Mapping[str, object], Sequence[Tuple[str, object]]]]

__all__ = [
    "HookError",
    "ServiceHooks",
    "ProxyHooks",
    "CmHooks",
    "HealthReport",
    "HealthStatus",
    "CmReport",
    "setting",
    "port",
    "credential",
    "dependency",
    "service_path",
    "render",
    "render_file",
    "enstratus_cfg",
    "log",
    "set_status",
    "run",
    "spawn",
    "stop_process",
    "running_pid",
    "wait_for_port",
]


class HookError(Exception):
    """A failure a hook reports on purpose; `retryable=True` asks the engine to call it again
    later (a dependency is not up yet)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = str(message)
        self.retryable = bool(retryable)

    def __str__(self):
        return self.message


def _where(exc):
    """`app.py:12 in configure`: the innermost frame of the traceback, or '' without one."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def _to_wit(exc):
    """The WIT `hook-error` for an exception a hook raised."""
    if isinstance(exc, HookError):
        return types.HookError(message=exc.message, retryable=exc.retryable)
    where = _where(exc)
    text = f"{type(exc).__name__}: {exc}"
    if where:
        text += f" (at {where})"
    return types.HookError(message=text, retryable=False)


def _hook(method):
    """Wraps a hook method so that what it raises reaches the host as a `hook-error`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Err as err:
            if isinstance(err.value, types.HookError):
                raise  # already the WIT error (the generated bindings' own idiom)
            raise Err(types.HookError(message=str(err.value), retryable=False)) from err
        except (Exception, SystemExit) as exc:  # sys.exit() too: a reason, not a trap
            raise Err(_to_wit(exc)) from exc

    wrapper.__stratus_hook__ = True
    return wrapper


class _Hooks:
    """Wraps the hook methods a subclass defines; `_HOOKS` names them per interface."""

    _HOOKS = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._HOOKS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__stratus_hook__", False):
                setattr(cls, name, _hook(method))


class ServiceHooks(_Hooks):
    """Base of a plugin's `ServiceHooks` class (the `service-hooks` interface)."""

    _HOOKS = (
        "install_service",
        "install_data_source",
        "configure",
        "start",
        "stop",
        "grant_database_access",
        "revoke_database_access",
        "health_check",
    )

    def install_service(self, ctx):
        pass

    def install_data_source(self, ctx):
        pass

    def configure(self, ctx):
        pass

    def start(self, ctx):
        pass

    def stop(self, ctx):
        pass

    def grant_database_access(self, ctx, grants):
        pass

    def revoke_database_access(self, ctx, grants):
        pass

    def health_check(self, ctx):
        return HealthReport(HealthStatus.UNKNOWN, "this plugin has no health check")


class ProxyHooks(_Hooks):
    """Base of a load balancer's `ProxyHooks` class (the `proxy-hooks` interface)."""

    _HOOKS = ("start_proxy", "remove_nodes")

    def start_proxy(self, ctx, nodes):
        pass

    def remove_nodes(self, ctx, nodes):
        pass


class CmHooks(_Hooks):
    """Base of a configuration-management adapter's `CmHooks` class (`cm-hooks`)."""

    _HOOKS = ("prepare", "run")

    def prepare(self, ctx):
        pass

    def run(self, ctx):
        return CmReport(summary="nothing to do", produced=[])


# --- the context -------------------------------------------------------------------------


def setting(ctx: Context, key: str, default: Optional[str] = None) -> Optional[str]:
    """The deployment file's setting `key` (the last one wins), or `default`."""
    found = default
    for s in ctx.settings:
        if s.key == key:
            found = s.value
    return found


def port(ctx: types.ServiceContext, name: str) -> types.Port:
    """The service's port `name` (`.private_port`, `.public_port`); HookError if absent."""
    for p in ctx.ports:
        if p.name == name:
            return p
    names = ", ".join(p.name for p in ctx.ports) or "none"
    raise HookError(f"the service has no port `{name}` (it has: {names})")


def credential(ctx: Context, name: str) -> types.Credential:
    """The service's credential `name` (`.user`, `.password`); HookError if absent."""
    for c in ctx.credentials:
        if c.name == name:
            return c
    raise HookError(f"the service has no credential `{name}`")


def dependency(
    ctx: types.ServiceContext, service: Optional[str] = None, data_source: Optional[bool] = None
) -> types.Dependency:
    """The dependency on `service` (or the first one); `data_source=True/False` narrows it
    to data-source or service dependencies. HookError if there is none."""
    for d in ctx.dependencies:
        if service is not None and d.service != service:
            continue
        is_data = d.kind == types.DependencyKind.DATA_SOURCE
        if data_source is not None and is_data != bool(data_source):
            continue
        return d
    what = f"`{service}`" if service is not None else "any service"
    raise HookError(f"the service has no dependency on {what}")


def service_path(ctx: types.ServiceContext, relative: str) -> str:
    """`<service_dir>/<relative>`. `relative` must stay inside the service directory (no
    absolute path, no `..`), so a template name from a setting cannot point elsewhere."""
    rel = str(relative)
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or ".." in parts or rel == "":
        raise HookError(f"`{rel}` is not a path relative to the service directory")
    return os.path.join(ctx.service_dir, rel)


# --- templates -------------------------------------------------------------------------------

_ESCAPING = {
    "none": host.Escaping.NONE,
    "toml-string": host.Escaping.TOML_STRING,
    "json-string": host.Escaping.JSON_STRING,
}


def _escaping(escaping):
    if isinstance(escaping, host.Escaping):
        return escaping
    try:
        return _ESCAPING[escaping]
    except (KeyError, TypeError):
        known = ", ".join(_ESCAPING)
        raise HookError(f"unknown escaping `{escaping}` (expected one of: {known})") from None


def _pairs(extra):
    if extra is None:
        return []
    items = extra.items() if hasattr(extra, "items") else extra
    return [(str(k), str(v)) for k, v in items]


def render(text: str, extra: Extra = None, escaping: str = "none") -> str:
    """`text` with each `{{ name }}` replaced by the hook's context variable (or `extra`'s,
    a dict or list of pairs, which wins), escaped as `escaping` says (`none`, `toml-string`,
    `json-string`). The host renders it; an unknown variable raises HookError naming it and
    the line, e.g. "line 2: unknown template variable `port.http.privat`"."""
    try:
        return host.render_template(str(text), _pairs(extra), _escaping(escaping))
    except Err as e:
        raise HookError(str(e.value)) from None


def _io_error(action, path, err):
    reason = err.strerror or str(err)
    return HookError(f"{action} {path}: {reason}")


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise _io_error("reading", path, e) from None
    except UnicodeDecodeError as e:
        raise HookError(f"reading {path}: not UTF-8 text ({e.reason})") from None


def _write_text(path, text):
    """Writes through a fresh temporary file renamed over `path`: a reader never sees half a
    file, and a link a program planted at either name is replaced, never written through."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.stratus-tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise _io_error("writing", path, e) from None


def render_file(
    ctx: types.ServiceContext,
    template: str,
    output: str,
    extra: Extra = None,
    escaping: str = "none",
) -> str:
    """Renders `<service_dir>/<template>` into `<service_dir>/<output>` and returns the
    output's path. Errors name the template file: "rendering cfg/app.conf: line 3: unknown
    template variable `x`"."""
    source = service_path(ctx, template)
    target = service_path(ctx, output)
    text = _read_text(source)
    try:
        rendered = render(text, extra, escaping)
    except HookError as e:
        raise HookError(f"rendering {template}: {e.message}") from None
    _write_text(target, rendered)
    return target


@contextlib.contextmanager
def enstratus_cfg(ctx: types.ServiceContext) -> Iterator[str]:
    """Writes the classic `<service_dir>/enstratus.cfg` (it holds passwords) and yields its
    path; on leaving the block the file is overwritten with zeros and removed."""
    try:
        text = host.enstratus_cfg()
    except Err as e:
        raise HookError(f"enstratus.cfg: {e.value}") from None
    path = os.path.join(ctx.service_dir, "enstratus.cfg")
    try:
        _write_text(path, text)
        yield path
    finally:
        _erase(path)


def _erase(path):
    """Overwrites a regular file at `path` with zeros, then removes whatever is there (a link
    is removed, not followed)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "wb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode):
                f.write(b"\0" * info.st_size)
    with contextlib.suppress(OSError):
        os.remove(path)


# --- logging and status --------------------------------------------------------------------


class _Log:
    """Records in the server's hook log: `log.info("wrote x")`."""

    @staticmethod
    def trace(message):
        host.log(host.Level.TRACE, str(message))

    @staticmethod
    def debug(message):
        host.log(host.Level.DEBUG, str(message))

    @staticmethod
    def info(message):
        host.log(host.Level.INFO, str(message))

    @staticmethod
    def warn(message):
        host.log(host.Level.WARN, str(message))

    @staticmethod
    def error(message):
        host.log(host.Level.ERROR, str(message))


log = _Log()


def set_status(message: str) -> None:
    """The one-line status operators see for this hook while it runs."""
    host.set_status(str(message))


# --- programs and processes ----------------------------------------------------------------


def run(
    program: str,
    args: Sequence[str] = (),
    env: Extra = None,
    working_dir: Optional[str] = None,
    timeout_ms: int = 0,
    stdin: Optional[str] = None,
    stdin_file: Optional[str] = None,
    stdout_file: Optional[str] = None,
    check: bool = True,
) -> host.CommandOutput:
    """Runs an allowed program (absolute path, no shell) to completion and returns its
    `CommandOutput` (`exit_code`, `stdout`, `stderr`, `truncated`). `stdin_file` and
    `stdout_file` connect standard input/output to files in granted directories. With
    `check`, an exit other than 0 raises HookError with the end of its stderr."""
    cmd = host.Command(
        program=str(program),
        args=[str(a) for a in args],
        env=_pairs(env),
        working_dir=working_dir,
        timeout_ms=int(timeout_ms),
        stdin=stdin,
    )
    try:
        if stdin_file is None and stdout_file is None:
            out = host.run(cmd)
        else:
            out = host.run_with_files(cmd, host.CommandFiles(stdin_file, stdout_file))
    except Err as e:
        raise HookError(f"running {program}: {e.value}") from None
    if check and out.exit_code != 0:
        how = "was killed by a signal" if out.exit_code is None else f"exited with {out.exit_code}"
        raise HookError(f"{program} {how}: {out.stderr[-1000:].strip()}")
    return out


def spawn(
    name: str,
    program: str,
    args: Sequence[str] = (),
    env: Extra = None,
    working_dir: Optional[str] = None,
) -> int:
    """Starts `program` under the supervisor as process `name` and returns its pid; it
    outlives the hook. Spawning a name that is already running is an error."""
    spec = host.ProcessSpec(
        name=str(name),
        program=str(program),
        args=[str(a) for a in args],
        env=_pairs(env),
        working_dir=working_dir,
    )
    try:
        return host.spawn(spec)
    except Err as e:
        raise HookError(f"starting {name} ({program}): {e.value}") from None


def stop_process(name: str, grace_ms: int = 5000) -> None:
    """SIGTERM, then SIGKILL after `grace_ms`; stopping an unknown or exited process succeeds."""
    try:
        host.stop_process(str(name), int(grace_ms))
    except Err as e:
        raise HookError(f"stopping {name}: {e.value}") from None


def running_pid(name: str) -> Optional[int]:
    """The pid of supervised process `name` if it runs, else None."""
    state = host.query_process(str(name))
    if isinstance(state, host.ProcessState_Running):
        return state.value
    return None


def wait_for_port(address: str, port: int, timeout_ms: int) -> bool:
    """True once `address:port` accepts a TCP connection, False when `timeout_ms` ran out."""
    try:
        return host.wait_for_port(str(address), int(port), int(timeout_ms))
    except Err as e:
        raise HookError(f"waiting for {address}:{port}: {e.value}") from None
