"""Keep the Kafka client's orphaned futures out of the error log.

When a transactional producer is fenced or fails for good, aiokafka sets the error on internal
futures that nobody awaits (its transaction waiter, one per failed transaction, and the waiter
it replaces on a fatal error). The same error has already reached the call that failed, which
handled it (a rewind, or the exit of a fenced processor); when those futures are collected,
asyncio logs each one as "Future exception was never retrieved", a traceback at ERROR level
that reads like a lost failure and is none. Install `quiet_orphaned_client_errors` on the
processor's loop: such a report is logged at DEBUG instead. Any other unhandled exception,
a Task's in particular, still reaches the loop's default handler.

One Task's failure is aiokafka's own and known too: a produce request that failed with a
retriable error puts its batches back in the queue (`reenqueue`) after a backoff; if the
producer failed every batch meanwhile (it was fenced, or abandoned by a rewind), the batch is
gone from its pending set and the request's task dies with a KeyError nobody awaits
(aio-libs/aiokafka PR 831 proposed a fix; 0.14.0 still has the race). The batch's failure
had already reached its sender (the fault drills found the report after a zombie processor
was thawed).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.producer import message_accumulator

log = logging.getLogger("common.client_futures")


def orphaned_client_error(context: dict[str, Any]) -> bool:
    """Whether the report is of a plain future (not a Task) holding a Kafka client error."""
    future = context.get("future")
    return (
        isinstance(context.get("exception"), KafkaError)
        and isinstance(future, asyncio.Future)
        and not isinstance(future, asyncio.Task)
    )


def requeued_batch_already_failed(context: dict[str, Any]) -> bool:
    """Whether the report is of aiokafka re-queueing a batch it had already failed: a
    KeyError raised by the accumulator's `reenqueue` itself."""
    error = context.get("exception")
    if not isinstance(error, KeyError):
        return False
    innermost: TracebackType | None = error.__traceback__
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    if innermost is None:
        return False
    code = innermost.tb_frame.f_code
    return code.co_name == "reenqueue" and code.co_filename == message_accumulator.__file__


def quiet_orphaned_client_errors(loop: asyncio.AbstractEventLoop) -> None:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if orphaned_client_error(context):
            log.debug("a Kafka client's unawaited future failed: %r", context["exception"])
            return
        if requeued_batch_already_failed(context):
            log.debug("aiokafka retried a batch it had already failed; nothing was lost")
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
