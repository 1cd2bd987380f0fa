"""Keep the Kafka client's orphaned futures out of the error log.

When a transactional producer is fenced or fails for good, aiokafka sets the error on internal
futures that nobody awaits (its transaction waiter, one per failed transaction, and the waiter
it replaces on a fatal error). The same error has already reached the call that failed, which
handled it (a rewind, or the exit of a fenced processor); when those futures are collected,
asyncio logs each one as "Future exception was never retrieved", a traceback at ERROR level
that reads like a lost failure and is none. Install `quiet_orphaned_client_errors` on the
processor's loop: such a report is logged at DEBUG instead. Any other unhandled exception,
a Task's in particular, still reaches the loop's default handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError

log = logging.getLogger("common.client_futures")


def orphaned_client_error(context: dict[str, Any]) -> bool:
    """Whether the report is of a plain future (not a Task) holding a Kafka client error."""
    future = context.get("future")
    return (
        isinstance(context.get("exception"), KafkaError)
        and isinstance(future, asyncio.Future)
        and not isinstance(future, asyncio.Task)
    )


def quiet_orphaned_client_errors(loop: asyncio.AbstractEventLoop) -> None:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if orphaned_client_error(context):
            log.debug("a Kafka client's unawaited future failed: %r", context["exception"])
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
