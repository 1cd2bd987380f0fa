"""Stopping a Kafka client never holds the processor up for longer than its patience."""

from __future__ import annotations

import asyncio

import pytest

from consumers.clients import stopped


class Client:
    """A client whose stop ends when `done` is set (never, unless the test sets it)."""

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.stopping = False
        self.stopped = False

    async def stop(self) -> None:
        self.stopping = True
        await self.done.wait()
        self.stopped = True


async def test_a_stop_that_hangs_is_left_to_itself_after_the_patience(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer whose stop waits on a request that is never answered (aiokafka after a
    broker's kill -9) held up the processor's shutdown until it was killed."""
    client = Client()
    await stopped(client, patience_s=0.05)
    assert client.stopping
    said = [r.getMessage() for r in caplog.records]
    assert said == ["a Kafka client did not stop in time; left to itself"]


async def test_a_caller_cancelled_meanwhile_does_not_cancel_the_stop() -> None:
    client = Client()
    waiting = asyncio.create_task(stopped(client))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client.stopping
    client.done.set()
    for _ in range(3):  # the event wakes the stop, which then finishes
        await asyncio.sleep(0)
    assert client.stopped
