"""The provider's queue: each postback is sent until it is answered 200, or retried later.

The rules (postback-formats.md §6, and the edge's README):
- one attempt at a time; the next goes out as soon as the previous one has ended;
- an attempt succeeds only on status 200 within `answer_timeout`; anything else (another
  status, no answer in time, a refused or broken connection) makes the postback due again
  `retry_delay` after that attempt ended;
- at most `max_retries` retries, so `max_retries + 1` attempts; then the postback is given up;
- with `drop_answers` P, a 200 is ignored with probability P, as if the answer was lost on its
  way back: the edge has stored the postback, so its retry is a duplicate the pipeline drops;
- due retries go before fresh postbacks; when only retries are left, the queue waits for the
  earliest one.

A run ends when every postback is acked or given up. It ends early when `stop` is set or
`max_duration` has passed; the postbacks still queued are then "abandoned". Setting `drain`
instead stops taking fresh postbacks while the retries already owed are still sent: the run
ends once those are acked or given up, and the postbacks never sent are "abandoned". Bounds: at most
`len(postbacks) * (max_retries + 1)` attempts, each within `answer_timeout`, and waits only
for a retry that is due later, so a run lasts at most about
`max_retries * (retry_delay + answer_timeout) + attempts * answer_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Literal, Protocol

from common.deadline import Deadline
from simulator.connection import Exchange
from simulator.mix import Postback

Fate = Literal["queued", "acked", "given_up", "abandoned"]

PROGRESS_EVERY_S = 10.0


class Sender(Protocol):
    """What the queue needs from a connection; `post` reports failures instead of raising."""

    async def post(self, body: bytes, content_type: str, answer_timeout: float) -> Exchange: ...


@dataclass(frozen=True, slots=True)
class Policy:
    answer_timeout: float = 10.0
    retry_delay: float = 300.0
    max_retries: int = 5
    drop_answers: float = 0.0

    def __post_init__(self) -> None:
        if not self.answer_timeout > 0:
            raise ValueError(f"answer timeout must be above 0 s, got {self.answer_timeout}")
        if not self.retry_delay >= 0:
            raise ValueError(f"retry delay must be 0 s or more, got {self.retry_delay}")
        if self.max_retries < 0:
            raise ValueError(f"max retries must be 0 or more, got {self.max_retries}")
        if not 0.0 <= self.drop_answers <= 1.0:
            raise ValueError(f"drop-answers must be between 0 and 1, got {self.drop_answers}")


@dataclass(slots=True)
class Delivery:
    """One postback's history. `oks` counts every 200 received, dropped ones included: after
    the first, the edge holds the postback whatever the simulator pretended."""

    index: int
    postback: Postback
    attempts: int = 0
    oks: int = 0
    dropped: int = 0
    fate: Fate = "queued"
    last: str = ""  # the last attempt's outcome: "200", "503", "timeout", "connection", ...


@dataclass(slots=True)
class Run:
    """Everything a report needs, collected while sending."""

    deliveries: list[Delivery]
    latencies: list[float] = field(default_factory=list)  # seconds, answered attempts only
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # timeout, connection, protocol
    attempts: int = 0
    retries: int = 0
    dropped: int = 0
    elapsed: float = 0.0
    waiting: float = 0.0  # idle, waiting for a retry to come due
    stopped: bool = False  # ended by `stop` or `max_duration`, not by an empty queue

    def count(self, fate: Fate) -> int:
        return sum(1 for delivery in self.deliveries if delivery.fate == fate)


async def deliver(
    postbacks: Sequence[Postback],
    sender: Sender,
    policy: Policy,
    *,
    seed: int = 0,
    stop: asyncio.Event | None = None,
    drain: asyncio.Event | None = None,
    max_duration: float | None = None,
    notify: Callable[[str], None] | None = None,
) -> Run:
    """Send every postback under `policy`; `seed` makes the dropped answers reproducible."""
    run = Run([Delivery(index, postback) for index, postback in enumerate(postbacks)])
    fresh = deque(run.deliveries)
    due: list[tuple[float, int, Delivery]] = []
    stop = stop if stop is not None else asyncio.Event()
    deadline = Deadline(max_duration) if max_duration is not None else None
    started = last_note = time.monotonic()
    while fresh or due:
        if stop.is_set() or (deadline is not None and deadline.expired):
            run.stopped = True
            break
        if drain is not None and drain.is_set():
            fresh.clear()
            if not due:
                break
        now = time.monotonic()
        if notify is not None and now - last_note >= PROGRESS_EVERY_S:
            last_note = now
            notify(_progress(run, len(fresh), len(due)))
        if due and due[0][0] <= now:
            delivery = heapq.heappop(due)[2]
        elif fresh:
            delivery = fresh.popleft()
        else:
            pause = due[0][0] - now
            if deadline is not None:
                pause = min(pause, deadline.remaining())
            if notify is not None and pause >= 1.0:
                notify(f"waiting {pause:.1f} s for the next of {len(due)} retries")
            await _pause(stop, pause)
            run.waiting += time.monotonic() - now
            continue
        exchange = await sender.post(
            delivery.postback.body, delivery.postback.content_type, policy.answer_timeout
        )
        if _record(run, delivery, exchange, policy, seed):
            delivery.fate = "acked"
        elif delivery.attempts > policy.max_retries:
            delivery.fate = "given_up"
        else:
            heapq.heappush(due, (time.monotonic() + policy.retry_delay, delivery.index, delivery))
    for delivery in run.deliveries:
        if delivery.fate == "queued":
            delivery.fate = "abandoned"
    run.elapsed = time.monotonic() - started
    return run


def _record(run: Run, delivery: Delivery, exchange: Exchange, policy: Policy, seed: int) -> bool:
    """Count one attempt; True when it acked the postback."""
    run.attempts += 1
    if delivery.attempts:
        run.retries += 1
    delivery.attempts += 1
    if exchange.status is None:
        failure = exchange.failure or "connection"
        run.failures[failure] += 1
        delivery.last = failure
        return False
    run.statuses[exchange.status] += 1
    run.latencies.append(exchange.seconds)
    delivery.last = str(exchange.status)
    if exchange.status != 200:
        return False
    delivery.oks += 1
    if policy.drop_answers and _chance(seed, delivery) < policy.drop_answers:
        run.dropped += 1
        delivery.dropped += 1
        delivery.last = "200 (dropped)"
        return False
    return True


def _chance(seed: int, delivery: Delivery) -> float:
    """A uniform draw in [0, 1) fixed by seed, postback and attempt, not by timing: which
    answers are lost does not depend on how retries happened to interleave with the rest."""
    key = f"{seed}:{delivery.index}:{delivery.attempts}".encode()
    return int.from_bytes(blake2b(key, digest_size=8).digest()) / 2**64


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await stop.wait()


def _progress(run: Run, fresh: int, due: int) -> str:
    return (
        f"{run.attempts} attempts: {run.count('acked')} acked, {run.count('given_up')} given up, "
        f"{fresh} not sent yet, {due} waiting for a retry"
    )
