"""The polyglot example's `web` tier in Python: renders cfg/greeter.toml with the host's
template variables and runs the greeter shipped in the package under the supervisor."""

import os

import stratus_plugin as stratus
from stratus_plugin import HealthReport, HealthStatus, HookError, log

# Supervisor name of the greeter process.
PROCESS = "greeter"
# The greeter inside the service directory (allowed as `service:bin/greeter`).
BINARY = "bin/greeter"
# How long `start` waits for the port: below the manifest's 20 s hook timeout.
START_WAIT_MS = 15_000


def binary(ctx):
    path = stratus.service_path(ctx, BINARY)
    if not os.path.isfile(path):
        raise HookError(f"{path} is missing: the package must ship the greeter binary")
    return path


class ServiceHooks(stratus.ServiceHooks):
    def install_service(self, ctx):
        binary(ctx)

    def configure(self, ctx):
        path = stratus.render_file(ctx, "cfg/greeter.toml", "greeter.toml", escaping="toml-string")
        log.info(f"wrote {path}")

    def start(self, ctx):
        program = binary(ctx)
        port = stratus.port(ctx, "http").private_port
        if stratus.running_pid(PROCESS) is None:
            config = stratus.service_path(ctx, "greeter.toml")
            pid = stratus.spawn(PROCESS, program, ["--config", config])
            log.info(f"started greeter (pid {pid})")
        if not stratus.wait_for_port(ctx.server.address, port, START_WAIT_MS):
            # Still starting (or crashing and being restarted): let the engine call again.
            raise HookError(
                f"greeter does not accept on {ctx.server.address}:{port} yet; see its process log",
                retryable=True,
            )

    def stop(self, ctx):
        stratus.stop_process(PROCESS)

    def health_check(self, ctx):
        port = stratus.port(ctx, "http").private_port
        pid = stratus.running_pid(PROCESS)
        if pid is None:
            return HealthReport(HealthStatus.CRITICAL, "greeter is not running")
        if stratus.wait_for_port(ctx.server.address, port, 1_000):
            return HealthReport(HealthStatus.OK, f"greeter (pid {pid}) accepts on port {port}")
        return HealthReport(HealthStatus.CRITICAL, f"greeter (pid {pid}) runs but port {port} does not accept")
