"""__NAME__: a Stratus service plugin. `configure` renders `cfg/__NAME__.conf` into the
service directory; the other hooks of the `service` world log what they were asked.

componentize-py looks for a class named after each exported interface (`ServiceHooks`).
"""

import os

import stratus_plugin as stratus
from stratus_plugin import HealthReport, HealthStatus, log


class ServiceHooks(stratus.ServiceHooks):
__SERVICE_HOOKS__
