"""`python -m consumers.metrics`: the metrics service, configured from the environment.

Exit status: 0 after a requested stop (SIGTERM/SIGINT), 2 for invalid settings (the message
names the variable), 1 when Kafka cannot be reached or consumption fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from prometheus_client import CollectorRegistry, disable_created_metrics

from common.env import settings_or_exit
from common.logs import configure_logging
from consumers.metrics.service import MetricsService
from consumers.metrics.settings import MetricsSettings

log = logging.getLogger("consumers.metrics")


async def serve(settings: MetricsSettings) -> None:
    service = MetricsService(settings, CollectorRegistry())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    await service.serve()


def main() -> int:
    settings = settings_or_exit(MetricsSettings.from_environ, os.environ, "consumers.metrics")
    configure_logging(settings.log_level, settings.log_format)
    # `_created` series double the output and nobody graphs them. Untyped in prometheus_client.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        asyncio.run(serve(settings))
    except Exception:
        log.exception("the metrics service failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
