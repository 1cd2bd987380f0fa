"""Answer deadlines: one timer for all requests, with `asyncio.timeout`'s semantics for each."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingest.deadlines import AnswerDeadlines


def this_task() -> asyncio.Task[object]:
    task = asyncio.current_task()
    assert task is not None
    return task


async def test_a_step_that_finishes_in_time_is_left_alone() -> None:
    """Work done within the budget completes; nothing fires later and the queue empties."""
    deadlines = AnswerDeadlines(0.05)
    with deadlines.start() as deadline:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)  # past the deadline: a stray cancellation would hit this sleep
    assert not deadline.expired
    assert this_task().cancelling() == 0
    with deadlines.start():
        assert len(deadlines) == 1  # finished ones leave as new ones come


async def test_a_step_still_waiting_at_the_deadline_raises_timeout_error() -> None:
    """The awaited step is cancelled at the deadline and the block raises TimeoutError, with
    the task not left cancelling (it may still answer)."""
    deadlines = AnswerDeadlines(0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.start() as deadline:
        await asyncio.sleep(10)
    elapsed = time.monotonic() - started
    assert deadline.expired
    assert 0.09 <= elapsed < 1.0, elapsed
    assert this_task().cancelling() == 0
    await asyncio.sleep(0)  # and the task goes on


async def test_every_request_gets_its_own_deadline_from_one_timer() -> None:
    """Requests started at different times time out at their own deadlines; those that
    finished first are not touched."""
    deadlines = AnswerDeadlines(0.2)
    outcomes: dict[int, tuple[str, float]] = {}
    started = time.monotonic()

    async def request(n: int, work_s: float) -> None:
        await asyncio.sleep(n * 0.05)
        try:
            with deadlines.start():
                await asyncio.sleep(work_s)
            outcomes[n] = ("done", time.monotonic() - started)
        except TimeoutError:
            outcomes[n] = ("timeout", time.monotonic() - started)

    await asyncio.gather(request(0, 10), request(1, 0.01), request(2, 10), request(3, 0.05))
    assert [outcomes[n][0] for n in range(4)] == ["timeout", "done", "timeout", "done"]
    assert 0.19 <= outcomes[0][1] < 0.19 + 0.5, outcomes
    assert 0.29 <= outcomes[2][1] < 0.29 + 0.5, outcomes
    assert len(deadlines) == 0


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """Cancelling the request's task (a shutdown, a client gone) is not turned into a timeout,
    whether or not the deadline expired too."""
    deadlines = AnswerDeadlines(10)

    async def request() -> None:
        with deadlines.start():
            await asyncio.sleep(10)

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    expiring = AnswerDeadlines(0.05)

    async def cancelled_as_it_expires() -> None:
        with expiring.start() as deadline:
            this = this_task()
            # Someone else cancels in the same loop iteration as the deadline expires.
            asyncio.get_running_loop().call_at(deadline.expires_at, this.cancel)
            await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(cancelled_as_it_expires())
