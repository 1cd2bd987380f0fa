"""Bounded, read-only reads of single partitions: what the trace knows of Kafka.

Every read is `read_committed`, from the first offset at or after a time to the first offset
after another (or the partition's last stable offset), and never waits for new records. The
consumer has no group id, so it joins no group and commits nothing; the processor group's
committed offsets are fetched with the admin client (OffsetFetch), which does not join either.
Each range read is remembered in `spans`: the trace reports them, so that an operator (and a
test) sees it touched only the partitions that can hold the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorError,
)
from aiokafka.structs import TopicPartition
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from common.deadline import Deadline

Record = Any  # aiokafka's ConsumerRecord: untyped
STALL_S: Final = 30.0  # a range read that moves no further for this long is an error
BATCH: Final = 10_000
COORDINATOR_WAIT_S: Final = 15.0
COORDINATOR_PENDING: Final = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
)


class TraceError(Exception):
    """Kafka cannot answer the question (no such topic, a read that stalls); says why."""


@dataclass(frozen=True, slots=True)
class Span:
    """A range read: offsets [start, stop) of one partition."""

    topic: str
    partition: int
    start: int
    stop: int


class Reader:
    def __init__(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient) -> None:
        self._consumer = consumer
        self._admin = admin
        self.spans: list[Span] = []

    async def partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Partitions per topic, from metadata of every topic: a metadata request that names
        a topic lets a broker with auto-creation on create it, and the trace writes nothing."""
        cluster = await self._consumer._client.fetch_all_metadata()  # as consumers/replay.py
        counts = {}
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                raise TraceError(f"topic {topic!r} does not exist")
            counts[topic] = len(partitions)
        return counts

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The group's committed offset on the partition; None if it has none."""
        tp = TopicPartition(topic, partition)
        # A cluster that never had a group yet answers these while it creates its offsets
        # topic; they pass in a moment.
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(COORDINATOR_WAIT_S),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type(COORDINATOR_PENDING),
            reraise=True,
        ):
            with attempt:
                found = await self._admin.list_consumer_group_offsets(group_id, partitions=[tp])
        meta = found.get(tp)
        return None if meta is None or meta.offset < 0 else int(meta.offset)

    async def _offset_at(self, tp: TopicPartition, when_ms: int, end: int) -> int:
        found = await self._consumer.offsets_for_times({tp: max(0, when_ms)})
        at = found.get(tp)
        return end if at is None else min(int(at.offset), end)

    async def read(
        self,
        topic: str,
        partition: int,
        since_ms: int,
        until_ms: int,
        keep: Callable[[Record], bool],
    ) -> list[Record]:
        """The committed records of the partition timestamped in [since_ms, until_ms) that
        `keep` accepts, in offset order."""
        tp = TopicPartition(topic, partition)
        end = int((await self._consumer.end_offsets([tp]))[tp])
        start = await self._offset_at(tp, since_ms, end)
        stop = await self._offset_at(tp, until_ms, end)
        self.spans.append(Span(topic, partition, start, stop))
        return await self._scan(tp, start, stop, keep)

    async def record_at(self, topic: str, partition: int, offset: int) -> Record | None:
        """The committed record at `offset`; None if there is none (deleted, aborted, beyond
        the end)."""
        tp = TopicPartition(topic, partition)
        end = int((await self._consumer.end_offsets([tp]))[tp])
        stop = min(offset + 1, end)
        self.spans.append(Span(topic, partition, offset, stop))
        found = await self._scan(tp, offset, stop, lambda record: record.offset == offset)
        return found[0] if found else None

    async def _scan(
        self, tp: TopicPartition, start: int, stop: int, keep: Callable[[Record], bool]
    ) -> list[Record]:
        if start >= stop:
            return []
        consumer = self._consumer
        consumer.assign([tp])
        consumer.seek(tp, start)
        kept: list[Record] = []
        position = start
        progress = Deadline(STALL_S)
        try:
            while position < stop:
                batches = await consumer.getmany(tp, timeout_ms=500, max_records=BATCH)
                kept.extend(
                    record
                    for record in batches.get(tp, ())
                    if record.offset < stop and keep(record)
                )
                moved = int(await consumer.position(tp))
                if moved > position:
                    position, progress = moved, Deadline(STALL_S)
                elif progress.expired:
                    raise TraceError(
                        f"reading {tp.topic} partition {tp.partition} stalled at offset {position}"
                    )
        finally:
            # An assigned partition is fetched in the background, and a broker answers one
            # request per connection at a time: the next offsets lookup would wait behind it.
            consumer.unsubscribe()
        return kept
