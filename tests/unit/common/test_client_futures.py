"""An orphaned Kafka client future is not reported as a lost failure; anything else still is."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
import uvloop
from aiokafka.errors import ProducerFenced

from common.client_futures import quiet_orphaned_client_errors


def orphan(loop: asyncio.AbstractEventLoop, error: BaseException) -> None:
    future = loop.create_future()
    future.set_exception(error)
    del future
    gc.collect()


async def failing(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_only_an_orphaned_client_future_is_kept_out_of_the_error_log(
    run: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        quiet_orphaned_client_errors(loop)
        orphan(loop, ProducerFenced())
        quiet = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert quiet == [], "an orphaned client future was logged as an error"
        orphan(loop, ValueError("ours"))
        task = loop.create_task(failing(ProducerFenced()))
        await asyncio.sleep(0)
        del task
        gc.collect()

    with caplog.at_level(logging.DEBUG):
        run(scenario())  # type: ignore[operator]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert [m.split("\n")[0] for m in errors] == [
        "Future exception was never retrieved",
        "Task exception was never retrieved",
    ]
    assert any("unawaited future failed" in r.getMessage() for r in caplog.records)
