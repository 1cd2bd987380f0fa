"""`python -m consumers.processor`: the dedupe + enrichment service (settings: README).

Exit status: 0 after a clean SIGTERM/SIGINT, 2 for invalid settings, 3 when fenced: another
instance processed one of its partitions meanwhile (this one was a zombie: paused or cut off
past its session timeout; the orchestrator restarts it and it rejoins the group with fresh
state), 1 when a partition could not be opened (restored) for another reason than Kafka
being out of reach, which is retried. An outage that outlives the transaction timeout is not
fatal: the partition rewinds and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import uvloop
from prometheus_client import CollectorRegistry, disable_created_metrics

from common.client_futures import quiet_orphaned_client_errors
from common.env import settings_or_exit
from common.logs import configure_logging
from common.ops_http import OpsServer, ops_app
from consumers.instruments import ProcessorMetrics
from consumers.runtime import ProcessorFenced, ProcessorRuntime
from consumers.settings import ProcessorSettings

log = logging.getLogger("consumers.processor")


async def serve(settings: ProcessorSettings) -> int:
    registry = CollectorRegistry()
    runtime = ProcessorRuntime(settings, ProcessorMetrics(registry))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_orphaned_client_errors(loop)  # a fence's echoes in aiokafka's own futures
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def readiness() -> tuple[bool, dict[str, object]]:
        ready = runtime.started and not stop.is_set()
        return ready, {"started": runtime.started, "partitions": runtime.assigned}

    ops = OpsServer(ops_app(registry, readiness), settings.host, settings.port)
    await ops.start()
    try:
        await runtime.start()
        log.info("processor running", extra={"fields": {"ops_port": ops.port}})
        await runtime.run(stop)
    except ProcessorFenced as error:
        log.error(
            "fenced: another instance processed a partition this one still held; "
            "exiting to rejoin cleanly: %s",
            error,
        )
        return 3
    finally:
        await ops.stop()
    log.info("processor stopped")
    return 0


def main() -> int:
    settings = settings_or_exit(ProcessorSettings.from_environ, os.environ, "consumers.processor")
    configure_logging(settings.log_level, settings.log_format)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    return uvloop.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
