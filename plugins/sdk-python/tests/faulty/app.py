"""Fails on purpose, as the `fail` setting says (see plugin.toml)."""

import stratus_plugin as stratus


class ServiceHooks(stratus.ServiceHooks):
    def configure(self, ctx):
        fail = stratus.setting(ctx, "fail", "none")
        if fail == "retryable":
            raise stratus.HookError("the database is not up yet", retryable=True)
        if fail == "value-error":
            int("not a number")
        if fail == "unknown-variable":
            stratus.render_file(ctx, "cfg/bad.conf", "bad.conf")
        path = stratus.render_file(ctx, "cfg/ok.conf", "ok.conf", extra={"greeting": "hi"})
        stratus.log.info(f"wrote {path}")
