"""An orphaned Kafka client future is not reported as a lost failure; anything else still is."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
import uvloop
from aiokafka.errors import KafkaConnectionError, ProducerFenced
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

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


async def requeue_after_failure() -> None:
    """aiokafka's race, with its own accumulator: a batch is sent (popped, pending), the
    producer fails every batch (fenced, abandoned), then the request's retry re-queues it."""
    accumulator = MessageAccumulator(None, 16384, 0, 30)
    tp = TopicPartition("events", 0)
    await accumulator.add_message(tp, b"key", b"value", timeout=1)
    batch = accumulator._pop_batch(tp)  # what the sender does with a batch it sends
    accumulator.fail_all(KafkaConnectionError())
    batch.future.exception()  # its sender saw the failure
    await asyncio.sleep(0)  # the failure's callback takes it out of the pending set
    accumulator.reenqueue(batch)  # the request's retry, after its backoff


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_aiokafka_requeueing_a_batch_it_already_failed_is_not_a_lost_failure(
    run: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The drills' "lost exceptions" check found this KeyError in a thawed zombie's log;
    a KeyError of anything else is still an error."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        quiet_orphaned_client_errors(loop)
        for coroutine in (requeue_after_failure(), failing(KeyError("ours"))):
            task = loop.create_task(coroutine)
            await asyncio.wait([task])
            del task
            gc.collect()

    with caplog.at_level(logging.DEBUG):
        run(scenario())  # type: ignore[operator]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("Task exception was never retrieved")
    assert "KeyError('ours')" in errors[0].getMessage()
    assert any("already failed" in r.getMessage() for r in caplog.records)
