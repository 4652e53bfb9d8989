"""__NAME__: a Stratus configuration-management adapter. `prepare` writes the tool's inputs
into the work directory (`__NAME__.conf`); `run` runs the tool and reports.

componentize-py looks for a class named after the exported interface (`CmHooks`).
"""

import os

import stratus_plugin as stratus
from stratus_plugin import CmReport, log


class CmHooks(stratus.CmHooks):
    def prepare(self, ctx):
        # CM hooks have no service context to render templates with: the inputs come from ctx.
        lines = [
            f"deployment = {ctx.deployment}",
            f"tier = {ctx.tier}",
            f"server = {ctx.server.name} ({ctx.server.address})",
        ]
        lines += [f"setting.{s.key} = {s.value}" for s in ctx.settings]
        path = os.path.join(ctx.work_dir, "__NAME__.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        log.info(f"wrote {path}")

    def run(self, ctx):
        log.info(f"run on {ctx.server.name}")
        return CmReport(f"__NAME__ configured {ctx.server.name}", [])
