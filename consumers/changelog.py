"""The state topic: each raw partition's state changes, written with its events, read back.

Every transaction of raw partition p also writes what it changed in p's state (the dedupe
window's new keys, the latency join's operations: `StateDelta`) to partition p of the state
topic, so the state changes commit or abort with the events and the consumed offsets. A
read_committed reader of the state partition therefore sees exactly the changes of the
committed transactions, and applying them in order rebuilds the state as of the committed
offset: no raw record is re-read or re-parsed, however costly the bodies.

Each record carries headers that let a reader check it has the whole chain:
`state-raw-from` and `state-raw-next` (the raw offsets the transaction consumed: [from, next)),
`state-part` ("i/n": a transaction's change cut in records of at most 512 KiB) and
`state-kind` ("delta", or "snapshot": the whole state as of `state-raw-next`, written after a
rebuild from the raw topic), and `state-keys` (the fingerprint of the dedupe identity that
made the window's keys: `Identity.fingerprint`). Its timestamp is the last raw record's (the
edge's receive time), so a reader finds where the state's span begins with
`offsets_for_times`, as on the raw topic.

The state topic is only ever an accelerator: when it cannot serve (no records yet, as on the
first start of this version; a gap in the chain; records of another format or window length;
keys made by another identity, after a change of DEDUPE_IDENTITY_FIELDS or of the parser;
retention shorter than the span) the partition is rebuilt from the raw topic as before, and a
snapshot is written so that the next rebuild can use the state topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from common.topics import TopicSpec
from consumers.clients import ProcessorClients, stopped
from consumers.processor.pipeline import PartitionPipeline
from consumers.processor.state import StateDelta, in_parts
from consumers.settings import ProcessorSettings

log = logging.getLogger("consumers.processor")

RAW_FROM: Final = "state-raw-from"
RAW_NEXT: Final = "state-raw-next"
PART: Final = "state-part"
KIND: Final = "state-kind"
KEYS: Final = "state-keys"
DELTA: Final = b"delta"
SNAPSHOT: Final = b"snapshot"
HOUR_MS: Final = 3_600_000
TAIL_OFFSETS: Final = 64  # read this far back from the end to find the last record


def state_topic(settings: ProcessorSettings, restore_span_ms: int) -> TopicSpec:
    """The state topic: one partition per raw partition, kept as long as a rebuild looks back
    (the state's span) plus an hour; segments roll hourly so that retention can act."""
    raw = settings.topics.raw
    return TopicSpec(
        name=settings.state_topic,
        partitions=raw.partitions,
        replication_factor=raw.replication_factor,
        min_insync_replicas=raw.min_insync_replicas,
        retention_ms=restore_span_ms + HOUR_MS,
        configs=(("segment.ms", str(HOUR_MS)), ("cleanup.policy", "delete")),
    )


class Changelog:
    """Writes one raw partition's state changes to its partition of the state topic."""

    def __init__(self, topic: str, partition: int, keys: bytes) -> None:
        self.tp = TopicPartition(topic, partition)
        self.keys = keys  # the identity's fingerprint, on every record

    async def send(
        self,
        producer: AIOKafkaProducer,
        delta: StateDelta,
        *,
        raw_from: int,
        raw_next: int,
        timestamp_ms: int | None,
        kind: bytes = DELTA,
    ) -> list[asyncio.Future[Any]]:
        """Send `delta` in the producer's open transaction; the deliveries to wait for."""
        parts = in_parts(delta)
        deliveries = []
        for index, part in enumerate(parts, 1):
            headers = [
                (RAW_FROM, str(raw_from).encode()),
                (RAW_NEXT, str(raw_next).encode()),
                (PART, f"{index}/{len(parts)}".encode()),
                (KIND, kind),
                (KEYS, self.keys),
            ]
            deliveries.append(
                await producer.send(
                    self.tp.topic,
                    part.encode(),
                    partition=self.tp.partition,
                    timestamp_ms=timestamp_ms,
                    headers=headers,
                )
            )
        return deliveries

    async def write_snapshot(
        self,
        producer: AIOKafkaProducer,
        pipeline: PartitionPipeline,
        *,
        raw_next: int,
        timestamp_ms: int | None,
    ) -> None:
        """The whole state as of raw offset `raw_next`, in a transaction of its own."""
        await producer.begin_transaction()
        try:
            deliveries = await self.send(
                producer,
                pipeline.snapshot(),
                raw_from=raw_next,
                raw_next=raw_next,
                timestamp_ms=timestamp_ms,
                kind=SNAPSHOT,
            )
            for delivery in deliveries:
                await delivery
        except BaseException:
            await producer.abort_transaction()
            raise
        await producer.commit_transaction()


class _Record(NamedTuple):
    offset: int
    raw_from: int
    raw_next: int
    part: int
    parts: int
    snapshot: bool
    keys: bytes  # empty from a version that did not say
    value: bytes
    timestamp: int


def _record(record: Any) -> _Record:
    headers = dict(record.headers)
    part, _, parts = headers[PART].partition(b"/")
    return _Record(
        record.offset,
        int(headers[RAW_FROM]),
        int(headers[RAW_NEXT]),
        int(part),
        int(parts),
        headers[KIND] == SNAPSHOT,
        headers.get(KEYS, b""),
        record.value,
        record.timestamp,
    )


class NotRestored(Exception):
    """The state topic cannot rebuild this partition; the message says why."""


async def restore_from_changelog(
    clients: ProcessorClients,
    changelog: Changelog,
    raw: TopicPartition,
    pipeline: PartitionPipeline,
    committed: int,
) -> int:
    """Rebuild `pipeline`'s state as of raw offset `committed` from the state topic; the number
    of state records applied. Raises NotRestored (the pipeline is then unusable: start over
    with a fresh one) when the state topic cannot serve."""
    reader = clients.reader(f"state-{raw.partition}")
    try:
        await reader.start()
        return await _restore(reader, changelog, raw, pipeline, committed)
    finally:
        await stopped(reader)


async def _restore(
    reader: AIOKafkaConsumer,
    changelog: Changelog,
    raw: TopicPartition,
    pipeline: PartitionPipeline,
    committed: int,
) -> int:
    tp = changelog.tp
    reader.assign([tp])
    beginning: int = (await reader.beginning_offsets([tp]))[tp]
    end: int = (await reader.end_offsets([tp]))[tp]
    raw_beginning: int = (await reader.beginning_offsets([raw]))[raw]
    if committed <= raw_beginning:
        return 0  # nothing was ever processed (or all of it is gone): the state is empty
    if end <= beginning:
        raise NotRestored("the state topic holds nothing for this partition yet")
    last = await _last_record(reader, tp, beginning, end)
    if last.raw_next != committed:
        raise NotRestored(
            f"the state topic ends at raw offset {last.raw_next}, the committed offset is "
            f"{committed} (written by another version, or the offsets were moved)"
        )
    if last.keys != changelog.keys:
        raise NotRestored(_OTHER_KEYS)
    since_ms = last.timestamp - pipeline.restore_span_ms
    found = await reader.offsets_for_times({tp: since_ms, raw: since_ms})
    start = found[tp].offset if found.get(tp) is not None else beginning
    # Every raw record from here on shaped the state: the chain must reach back this far.
    raw_since = found[raw].offset if found.get(raw) is not None else committed
    reader.seek(tp, start)
    applied = 0
    expected_from: int | None = None  # the raw offset the next transaction must start at
    open_part = 0  # parts of the current transaction applied so far
    other_keys = False  # keys of another identity applied since the last snapshot of ours
    while await reader.position(tp) < end:
        batches = await reader.getmany(tp, timeout_ms=1000, max_records=500)
        for kafka_record in batches.get(tp, []):
            if kafka_record.offset >= end:
                break
            record = _record(kafka_record)
            if open_part == 0 and record.part != 1:
                if expected_from is None:
                    continue  # began inside a transaction: start at the next one
                raise NotRestored(f"a state record out of place at offset {record.offset}")
            if record.part == 1:
                if expected_from is None:
                    if not record.snapshot and record.raw_from > raw_since:
                        raise NotRestored(
                            f"the state topic reaches back to raw offset {record.raw_from}, "
                            f"the state's span to {raw_since} (retention shorter than the span, "
                            "or the first deploy of this version)"
                        )
                elif record.raw_from != expected_from and not record.snapshot:
                    raise NotRestored(
                        f"a gap in the state topic: raw offsets {expected_from} to "
                        f"{record.raw_from} have no state record"
                    )
            try:
                pipeline.apply_state(StateDelta.decode(record.value))
            except ValueError as error:
                raise NotRestored(f"a state record this version cannot apply: {error}") from None
            applied += 1
            if record.keys != changelog.keys:
                other_keys = True
            elif record.snapshot and record.part == 1:
                other_keys = False  # a snapshot replaces the whole state
            open_part = 0 if record.part == record.parts else record.part
            if open_part == 0:
                expected_from = record.raw_next
    if expected_from != committed:
        raise NotRestored(f"the state topic's chain ends at raw offset {expected_from}")
    if other_keys:
        raise NotRestored(_OTHER_KEYS)
    return applied


_OTHER_KEYS: Final = (
    "the state's keys were made by another dedupe identity (DEDUPE_IDENTITY_FIELDS or the "
    "parser changed): they would not recognise a retry"
)


async def _last_record(
    reader: AIOKafkaConsumer, tp: TopicPartition, beginning: int, end: int
) -> _Record:
    """The last committed record before `end` (transaction markers take offsets too)."""
    back = TAIL_OFFSETS
    while True:
        reader.seek(tp, max(beginning, end - back))
        last: _Record | None = None
        while await reader.position(tp) < end:
            batches = await reader.getmany(tp, timeout_ms=1000, max_records=500)
            for record in batches.get(tp, []):
                if record.offset < end:
                    last = _record(record)
        if last is not None:
            return last
        if end - back <= beginning:
            raise NotRestored("the state topic holds no committed record for this partition")
        back *= 8
