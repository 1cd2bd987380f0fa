"""From a question (a tracking id, an event id, a raw record's coordinates) to a journey.

Which partitions can hold the answer follows from the keys: the edge keys a raw record by the
tracking id (else a hash of the body) and Kafka's default partitioner places it; dead letters
keep that key; an event is keyed by its tracking id, else by its event id. So a tracking id
names one raw, one dead-letter and (usually) one events partition, and only those are read.
An event id names a partition only for events without a tracking id; for the others every
events partition is scanned, and the journey says so.

Raw records are read by receive time over [since, until). Events and dead letters are written
when the processor gets to a raw record, so they are read from a little before `since` (the
processor's clock may lag the edge's) to an hour after `until` (the processor may lag).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from common.partitioning import default_partition
from consumers.processor.identity import Identity
from consumers.trace.journey import (
    Coordinates,
    DeadLetterFound,
    EventFound,
    Step,
    attempt,
    dead_letter_found,
    event_found,
    judge,
)
from consumers.trace.reader import Reader, Record, Span, TraceError

CLOCK_SKEW_MS: Final = 5 * 60 * 1000
OUTPUT_LAG_MS: Final = 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Topics:
    raw: str
    events: str
    dlq: str


@dataclass(frozen=True, slots=True)
class Query:
    """Exactly one of the three."""

    tracking_id: str | None = None
    event_id: str | None = None
    raw: Coordinates | None = None

    def describe(self) -> str:
        if self.tracking_id is not None:
            return f"tracking id {self.tracking_id}"
        if self.event_id is not None:
            return f"event id {self.event_id}"
        assert self.raw is not None
        return "raw record {}:{}:{}".format(*self.raw)


@dataclass
class Journey:
    query: Query
    since_ms: int
    until_ms: int
    group_id: str
    key: str | None = None  # the raw records' key: the tracking id, or the body's hash
    raw_partition: int | None = None
    committed: int | None = None
    steps: list[Step] = field(default_factory=list)
    events: list[EventFound] = field(default_factory=list)
    dead_letters: list[DeadLetterFound] = field(default_factory=list)
    read: list[Span] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.steps or self.events or self.dead_letters)


def _key_of(record: Record) -> str | None:
    key: bytes | None = record.key
    return None if key is None else key.decode(errors="replace")


async def trace(
    reader: Reader,
    topics: Topics,
    query: Query,
    *,
    group_id: str,
    identity: Identity,
    since_ms: int,
    until_ms: int,
) -> Journey:
    journey = Journey(query, since_ms, until_ms, group_id)
    try:
        await _trace(reader, topics, journey, identity)
    finally:
        journey.read = list(reader.spans)
    return journey


async def _trace(reader: Reader, topics: Topics, journey: Journey, identity: Identity) -> None:
    counts = await reader.partition_counts([topics.raw, topics.events, topics.dlq])
    query = journey.query
    if query.tracking_id is not None:
        key: str | None = query.tracking_id
    elif query.raw is not None:
        key = await _key_at(reader, topics, counts, journey, query.raw)
    else:
        assert query.event_id is not None
        key = await _key_of_event(reader, topics, counts, journey, query.event_id)
    if key is None:
        return
    journey.key = key
    encoded = key.encode()
    since, until = journey.since_ms, journey.until_ms
    partition = default_partition(encoded, counts[topics.raw])
    journey.raw_partition = partition
    raw = await reader.read(
        topics.raw, partition, since, until, lambda record: record.key == encoded
    )
    attempts = [
        attempt(record.value, partition, record.offset, record.headers, record.timestamp, identity)
        for record in raw
    ]
    journey.committed = await reader.committed(journey.group_id, topics.raw, partition)
    if journey.committed is None:
        journey.notes.append(
            f"the processor group {journey.group_id!r} has no committed offset on "
            f"{topics.raw} partition {partition}: is PROCESSOR_GROUP_ID right?"
        )
    # Events are keyed by the tracking id, else by their event id; a raw key that is a body's
    # hash keys no event.
    event_keys = {each.event_key for each in attempts if each.event_key is not None}
    if query.tracking_id is not None or not event_keys:
        event_keys.add(key)
    wanted = {key.encode() for key in event_keys}
    out_since, out_until = since - CLOCK_SKEW_MS, until + OUTPUT_LAG_MS
    for events_partition in sorted(
        {default_partition(each, counts[topics.events]) for each in wanted}
    ):
        for record in await reader.read(
            topics.events, events_partition, out_since, out_until, lambda r: r.key in wanted
        ):
            found = event_found(record.value, events_partition, record.offset)
            if found is not None:
                journey.events.append(found)
    dlq_partition = default_partition(encoded, counts[topics.dlq])
    for record in await reader.read(
        topics.dlq, dlq_partition, out_since, out_until, lambda r: r.key == encoded
    ):
        journey.dead_letters.append(dead_letter_found(record.headers, dlq_partition, record.offset))
    journey.steps = judge(
        attempts,
        journey.events,
        journey.dead_letters,
        raw_topic=topics.raw,
        committed=journey.committed,
    )


async def _key_at(
    reader: Reader, topics: Topics, counts: dict[str, int], journey: Journey, at: Coordinates
) -> str | None:
    """The key of the raw record at `at`."""
    topic, partition, offset = at
    if topic != topics.raw:
        raise TraceError(f"coordinates name {topic!r}; the raw topic is {topics.raw!r}")
    if not 0 <= partition < counts[topic]:
        raise TraceError(f"{topic} has partitions 0 to {counts[topic] - 1}, not {partition}")
    record = await reader.record_at(topic, partition, offset)
    if record is None:
        journey.notes.append(f"no committed record at {topic}:{partition}:{offset}")
        return None
    if not journey.since_ms <= record.timestamp < journey.until_ms:
        journey.notes.append(
            f"{topic}:{partition}:{offset} was received outside the range: set --since and "
            "--until around it to see it"
        )
    key = _key_of(record)
    if key is None:
        journey.notes.append(f"{topic}:{partition}:{offset} has no key: nothing links it to others")
    return key


async def _key_of_event(
    reader: Reader, topics: Topics, counts: dict[str, int], journey: Journey, wanted_id: str
) -> str | None:
    """The raw key of the message whose event has `wanted_id`: its tracking id, or (for an
    event without one) the key of the raw record its lineage names."""
    needle = wanted_id.encode()
    since, until = journey.since_ms - CLOCK_SKEW_MS, journey.until_ms + OUTPUT_LAG_MS
    home = default_partition(needle, counts[topics.events])
    order = [home] + [p for p in range(counts[topics.events]) if p != home]
    for n, partition in enumerate(order):
        if n == 1:
            journey.notes.append(
                f"no event {wanted_id} in {topics.events} partition {home}, where events "
                "without a tracking id are; its event id does not say which partition holds "
                f"an event with one, so all {counts[topics.events]} partitions were read"
            )
        for record in await reader.read(
            topics.events, partition, since, until, lambda r: needle in (r.value or b"")
        ):
            found = event_found(record.value, partition, record.offset)
            if found is None or found.event_id != wanted_id:
                continue
            if found.tracking_id is not None:
                return found.tracking_id
            if found.lineage is None:
                journey.events.append(found)
                journey.notes.append("the event names no raw record (no lineage)")
                return None
            return await _key_at(reader, topics, counts, journey, found.lineage)
    return None
