"""The answer deadline of every postback, kept by one timer for all requests in flight.

Each request gets one `AnswerDeadline`: a value (when its budget runs out) that also bounds
the awaited steps inside its `with` block, reading the body and waiting for Kafka's
acknowledgement, exactly as `asyncio.timeout` would: when it expires, the task is cancelled
where it waits and the block raises TimeoutError; a cancellation from anyone else stays a
cancellation.

Why not `asyncio.timeout`: it arms and cancels a loop timer per request (under uvloop a libuv
timer start and stop, plus rescheduling), which cost more than the rest of the handler's own
work. Every request here has the same budget, so deadlines expire in the order requests
started: a FIFO queue and one loop timer, armed for the oldest unfinished deadline, do the
same job. Finished deadlines leave the front of the queue as new ones arrive, so it holds
about as many entries as there are requests in flight.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

_RUNNING, _FINISHED, _EXPIRED = 0, 1, 2


class AnswerDeadline:
    """One request's deadline; use as `with deadline:` around the steps it bounds."""

    __slots__ = ("_cancelling", "_state", "_task", "expires_at")

    def __init__(self, task: asyncio.Task[object], expires_at: float) -> None:
        self._task = task
        self._state = _RUNNING
        self._cancelling = 0
        self.expires_at = expires_at  # on the event loop's clock (monotonic)

    @property
    def expired(self) -> bool:
        return self._state == _EXPIRED

    def __enter__(self) -> AnswerDeadline:
        self._cancelling = self._task.cancelling()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == _RUNNING:
            self._state = _FINISHED
        elif exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            # Our own cancellation (no one else's is pending): it means "time is up".
            raise TimeoutError from exc

    def _expire(self) -> None:
        self._state = _EXPIRED
        self._task.cancel()


class AnswerDeadlines:
    """Hands out deadlines of `budget_s` seconds and expires them; one per event loop."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._pending: collections.deque[AnswerDeadline] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> AnswerDeadline:
        """A deadline for the current task, `budget_s` from now."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an answer deadline needs a running task")
        loop = task.get_loop()
        deadline = AnswerDeadline(task, loop.time() + self.budget_s)
        pending = self._pending
        while pending and pending[0]._state == _FINISHED:
            pending.popleft()
        pending.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(deadline.expires_at, self._expire_due, loop)
        return deadline

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        pending = self._pending
        now = loop.time()
        while pending:
            oldest = pending[0]
            if oldest._state != _RUNNING:
                pending.popleft()
            elif oldest.expires_at <= now:
                pending.popleft()
                oldest._expire()
            else:
                self._timer = loop.call_at(oldest.expires_at, self._expire_due, loop)
                return

    def __len__(self) -> int:
        """Deadlines still queued (finished ones leave lazily)."""
        return len(self._pending)
