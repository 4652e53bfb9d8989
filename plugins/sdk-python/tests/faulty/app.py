"""Fails on purpose, as the `fail` setting says (see plugin.toml)."""

import os
import sys

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
        if fail == "exit":
            sys.exit(3)
        if fail == "escape":
            stratus.render_file(ctx, "../outside.conf", "outside.conf")
        path = stratus.render_file(ctx, "cfg/ok.conf", "ok.conf", extra={"greeting": "hi"})
        stratus.log.info(f"wrote {path}")
        with stratus.enstratus_cfg(ctx) as cfg:
            first = open(cfg, encoding="utf-8").readline().strip()
        if os.path.lexists(cfg):
            raise stratus.HookError("enstratus.cfg outlived its block")
        stratus.log.info(f"enstratus.cfg began with {first}")
