"""After a run: did every notification the edge accepted become exactly one event?

The expected event ids come from the processor's own functions, `parse` and `Identity`, applied
to the bytes the simulator sent, so the check and the processor agree on what "one
notification" means (set `identity_fields` like the processor's DEDUPE_IDENTITY_FIELDS).

- expected: every well-formed postback the edge answered 200 at least once. A 200 the
  simulator dropped still counts: the edge had stored the postback.
- missing: expected ids with no event; duplicated: ids of this run with more than one event.
  Either fails the check.
- unconfirmed: events for postbacks never answered 200 (given up or abandoned). A timed-out
  or refused attempt may still have been stored; informative only.
- foreign: events of other traffic on the same topic; ignored.
- malformed: the processor must dead-letter malformed bodies. They have no event id, but most
  carry a tracking id unique to the run ("BAD..."): an event with one of those fails the check.
  The accepted ones are counted (`dead_letters_expected`); the dead-letter topic is not read.

The topic is read with isolation_level=read_committed from `since_ms` (event timestamps are
the processor's clock), up to its last stable offsets, again and again until every expected
id has appeared or `wait_s` has passed. Once all are there it keeps reading for `settle_s`,
so that a duplicate committed a little later is seen too; one committed after that is not (the
simulator cannot know when the processor has caught up with the raw topic).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from common.deadline import Deadline
from common.kafka import KafkaSettings
from consumers.processor.identity import Identity, event_id
from consumers.processor.parse import Unparseable, parse
from simulator.delivery import Delivery

POLL_INTERVAL_S: Final = 0.2  # between reads of a topic that has not caught up yet
MIN_PASS_S: Final = 2.0  # one read of the topic gets at least this long, even past `wait_s`
SAMPLE: Final = 20  # ids listed in the report, per kind of problem


class CheckError(Exception):
    """The check could not run (no such topic); the message says why."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the events topic must hold after a run."""

    expected: frozenset[str]  # acknowledged at least once: exactly one event each
    unconfirmed: frozenset[str]  # never answered 200: zero or one event each
    dead_letters: int  # malformed postbacks the edge accepted
    malformed_ids: frozenset[str] = frozenset()  # tracking ids that must never be in an event


def expectation(deliveries: Iterable[Delivery], identity: Identity) -> Expectation:
    expected: set[str] = set()
    unconfirmed: set[str] = set()
    malformed_ids: set[str] = set()
    dead_letters = 0
    for delivery in deliveries:
        postback = delivery.postback
        try:
            notification = parse(postback.body, postback.content_type)
        except Unparseable:
            dead_letters += delivery.oks > 0
            if postback.tracking_id is not None:
                malformed_ids.add(postback.tracking_id)
            continue
        (expected if delivery.oks else unconfirmed).add(event_id(identity.digest(notification)))
    return Expectation(
        frozenset(expected),
        frozenset(unconfirmed - expected),
        dead_letters,
        frozenset(malformed_ids),
    )


@dataclass(frozen=True, slots=True)
class CheckResult:
    topic: str
    expected: int
    found: int
    missing: tuple[str, ...]
    duplicated: tuple[str, ...]
    unconfirmed_found: int
    foreign: int
    unreadable: int
    dead_letters_expected: int
    seconds: float
    malformed_events: int = 0

    @property
    def passed(self) -> bool:
        return not self.missing and not self.duplicated and not self.malformed_events

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "topic": self.topic,
            "expected": self.expected,
            "found": self.found,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "malformed_as_events": self.malformed_events,
            "missing_ids": list(self.missing[:SAMPLE]),
            "duplicated_ids": list(self.duplicated[:SAMPLE]),
            "unconfirmed_found": self.unconfirmed_found,
            "foreign_events": self.foreign,
            "unreadable_events": self.unreadable,
            "dead_letters_expected": self.dead_letters_expected,
            "seconds": round(self.seconds, 3),
        }


async def check_events(
    kafka: KafkaSettings,
    topic: str,
    wanted: Expectation,
    *,
    since_ms: int,
    wait_s: float,
    settle_s: float = 2.0,
) -> CheckResult:
    """Read `topic` from `since_ms` and compare it with `wanted`; see the module docstring."""
    started = time.monotonic()
    deadline = Deadline(wait_s)
    seen: Counter[str] = Counter()
    tally = Counter[str]()  # foreign, unreadable
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
        client_id="postback-simulator-check",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
        cluster = await consumer._client.fetch_all_metadata()  # as consumers/replay.py does
        partitions = [
            TopicPartition(topic, partition)
            for partition in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise CheckError(f"topic {topic!r} does not exist")
        consumer.assign(partitions)
        starts = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        await _read_to_end(consumer, partitions, wanted, seen, tally, deadline)
        while not wanted.expected.issubset(seen) and not deadline.expired:
            await asyncio.sleep(POLL_INTERVAL_S)  # the processor commits on its own clock
            await _read_to_end(consumer, partitions, wanted, seen, tally, deadline)
        if wanted.expected.issubset(seen):
            settle = Deadline(settle_s)
            while not settle.expired:  # keep reading: a late duplicate must not slip by
                await asyncio.sleep(min(POLL_INTERVAL_S, settle.remaining()))
                await _read_to_end(consumer, partitions, wanted, seen, tally, settle)
    finally:
        await consumer.stop()
    return CheckResult(
        topic=topic,
        expected=len(wanted.expected),
        found=sum(1 for id_ in wanted.expected if seen[id_]),
        missing=tuple(sorted(id_ for id_ in wanted.expected if not seen[id_])),
        duplicated=tuple(sorted(id_ for id_, times in seen.items() if times > 1)),
        unconfirmed_found=sum(1 for id_ in wanted.unconfirmed if seen[id_]),
        foreign=tally["foreign"],
        unreadable=tally["unreadable"],
        dead_letters_expected=wanted.dead_letters,
        seconds=time.monotonic() - started,
        malformed_events=tally["malformed"],
    )


async def _read_to_end(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    wanted: Expectation,
    seen: Counter[str],
    tally: Counter[str],
    deadline: Deadline,
) -> None:
    """Read every partition at least up to its end offset now (the last stable one:
    read_committed).

    Every record a fetch returns is counted, also one past that end: it was committed after
    the end was taken, and the consumer's position has moved past it, so no later pass would
    read it again.
    """
    ends = await consumer.end_offsets(partitions)
    budget = Deadline(max(deadline.remaining(), MIN_PASS_S))
    pending = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
    while pending and not budget.expired:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for records in batches.values():
            for record in records:
                _count(record.value, wanted, seen, tally)
        pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]


def _count(
    value: bytes | None, wanted: Expectation, seen: Counter[str], tally: Counter[str]
) -> None:
    """One event: ours (by id), a malformed body of ours (by tracking id), or someone else's."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        tally["unreadable"] += 1
        return
    id_ = event.get("event_id") if isinstance(event, dict) else None
    if not isinstance(id_, str):
        tally["unreadable"] += 1
    elif id_ in wanted.expected or id_ in wanted.unconfirmed:
        seen[id_] += 1
    elif event.get("tracking_id") in wanted.malformed_ids:
        tally["malformed"] += 1
    else:
        tally["foreign"] += 1
