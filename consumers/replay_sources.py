"""What a replay reads: dead letters and raw records turned into events, and the event ids a
topic holds; every read bounded by offsets taken when it starts (consumers/replay.py says why).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Container
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from common import raw_record
from common.env import SettingsError
from common.startup import until_kafka_answers
from consumers import dlq
from consumers.processor.pipeline import DeadLetter, Disposition, Emit, PartitionPipeline
from consumers.processor.window import PROVIDER_RETRY_SPAN_MS
from consumers.settings import ProcessorSettings

# A dead letter is replayed once the live processor has committed, in its raw partition, a
# postback received this long after it: by then it has handled every copy of the notification
# the provider may send (it retries for about 25 minutes). The minute covers the edges' clocks
# and postbacks appended out of receive order.
SETTLED_AFTER_MS: Final = PROVIDER_RETRY_SPAN_MS + 60_000
# How long a read waits for transactions open when it started to end: the processor commits
# every PROCESSOR_COMMIT_INTERVAL_MS; a dead writer's transaction ends at its timeout (60 s).
OPEN_TRANSACTION_WAIT_S: Final = 120.0
FETCH_TIMEOUT_MS: Final = 500


@dataclass
class ReplayReport:
    """What a replay did; printed as JSON by the command."""

    mode: str
    output_topic: str
    read: int = 0  # records of the range read: dead letters, or raw records
    restored: int = 0  # raw records before the range, read to restore the dedupe windows
    events: int = 0  # events written (on a dry run: that would be)
    present: int = 0  # events the output topic held already: not written again
    duplicates: int = 0  # records the dedupe window dropped
    dead_letters: Counter[str] = field(default_factory=Counter)  # still no event, by reason
    unsettled: int = 0  # dead letters a copy of whose notification may still come: later

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "output_topic": self.output_topic,
            "records_read": self.read,
            "records_restored": self.restored,
            "events_written": self.events,
            "events_already_present": self.present,
            "duplicates_dropped": self.duplicates,
            "dead_letters": dict(self.dead_letters),
            "dead_letters_left_for_later": self.unsettled,
        }


class Derived(NamedTuple):
    """An event a replay may write: its id (to find it on the topic) and its record."""

    event_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Reader:
    """Reads topics for a replay: a `read_committed` consumer that fetches, and a second one
    that only looks offsets up, since a fetch the broker holds open (up to its max wait)
    delays every later request on the same connection."""

    def __init__(self, options: dict[str, Any]) -> None:
        common: dict[str, Any] = {
            **options,
            "client_id": "postback-replay",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        # A short fetch wait: partitions are read one after another, each to a known end.
        self._fetcher = AIOKafkaConsumer(
            **common, isolation_level="read_committed", fetch_max_wait_ms=100
        )
        # read_uncommitted: its end offsets are the high watermarks, open transactions included
        self._lookup = AIOKafkaConsumer(**common)

    async def start(self) -> None:
        await self._fetcher.start()
        await self._lookup.start()

    async def stop(self) -> None:
        await self._fetcher.stop()
        await self._lookup.stop()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """Every partition of `topic`, from fresh metadata; none when it does not exist."""
        cluster = await self._lookup._client.fetch_all_metadata()
        return sorted(TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ())

    async def ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end, records of open transactions included: a `read_committed`
        read up to it has seen every transaction that committed before this call."""
        if not partitions:
            return {}
        ends: dict[TopicPartition, int] = await self._lookup.end_offsets(partitions)
        return ends

    async def offsets_at(
        self, partitions: list[TopicPartition], when_ms: int
    ) -> dict[TopicPartition, int]:
        """Each partition's first offset timestamped at or after `when_ms`; its end if none."""
        if not partitions:
            return {}
        times = {tp: max(0, when_ms) for tp in partitions}
        found = await self._lookup.offsets_for_times(times)
        ends = await self.ends(partitions)
        return {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in times}

    async def batches(
        self, tp: TopicPartition, start: int, end: int
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """The committed records of `tp` in [start, end), batch by batch, in offset order.

        Waits for transactions still open below `end` to end (aborted records are skipped),
        for up to OPEN_TRANSACTION_WAIT_S without progress.
        """
        if start >= end:
            return
        consumer = self._fetcher
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + OPEN_TRANSACTION_WAIT_S
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS, max_records=10_000)
            batch = [record for record in fetched.get(tp, []) if record.offset < end]
            if batch:
                deadline = time.monotonic() + OPEN_TRANSACTION_WAIT_S
                yield batch
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{tp.topic} partition {tp.partition}: a transaction has kept offsets "
                    f"below {end} unreadable for {OPEN_TRANSACTION_WAIT_S:.0f} s; try again later"
                )

    async def event_ids(
        self, partitions: list[TopicPartition], from_ms: int, wanted: Container[str] | None = None
    ) -> set[str]:
        """The event ids (of `wanted` only, unless None) that `partitions` hold from
        `from_ms` on, everything committed before the call included."""
        ends = await self.ends(partitions)
        starts = await self.offsets_at(partitions, from_ms)
        present: set[str] = set()
        for tp in partitions:
            async for batch in self.batches(tp, starts[tp], ends[tp]):
                for record in batch:
                    event_id = _event_id(record.value)
                    if event_id is not None and (wanted is None or event_id in wanted):
                        present.add(event_id)
        return present


@dataclass(frozen=True)
class LiveProgress:
    """How far the live processor has got in each raw partition, when the replay looked."""

    committed: dict[int, int]  # the group's committed offset: the next record it will read
    handled_until_ms: dict[int, int]  # the receive time of the last record below it

    def settled(self, partition: int, offset: int, received_at_ms: int) -> bool:
        """Whether the live processor has handled this raw record and every copy of its
        notification the provider may still send, so that it will emit none of them later."""
        handled_until_ms = self.handled_until_ms.get(partition)
        return (
            offset < self.committed.get(partition, 0)
            and handled_until_ms is not None
            and received_at_ms + SETTLED_AFTER_MS <= handled_until_ms
        )


async def live_progress(reader: Reader, settings: ProcessorSettings) -> LiveProgress:
    """The processor group's committed offsets, and the receive time (the edge's Kafka
    timestamp) of the record just below each."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options(), client_id="postback-replay")
    await admin.start()
    try:
        # A cluster that never saw a group answers "coordinator not available" for a moment.
        async for attempt in until_kafka_answers(settings.kafka):
            with attempt:
                offsets = await admin.list_consumer_group_offsets(settings.group_id)
    finally:
        await admin.close()
    raw = settings.topics.raw.name
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == raw}
    handled_until_ms: dict[int, int] = {}
    for partition, offset in committed.items():
        if offset > 0:
            tp = TopicPartition(raw, partition)
            async for batch in reader.batches(tp, offset - 1, offset):
                handled_until_ms[partition] = batch[-1].timestamp
    return LiveProgress(committed, handled_until_ms)


def _event_id(value: bytes | None) -> str | None:
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    found = event.get("event_id") if isinstance(event, dict) else None
    return found if isinstance(found, str) else None


# ------------------------------------------------------------------------------ deriving


def _offered(disposition: Disposition, report: ReplayReport) -> Derived | None:
    """The event a pipeline's disposition offers, or None (counted in `report`)."""
    if type(disposition) is Emit:
        event_id = _event_id(disposition.value)
        assert event_id is not None  # the pipeline always writes one
        return Derived(event_id, disposition.key, disposition.value, disposition.headers)
    if type(disposition) is DeadLetter:
        report.dead_letters[disposition.reason] += 1
    else:
        report.duplicates += 1
    return None


def _source_of(record: ConsumerRecord[bytes, bytes], raw_topic: str) -> tuple[int, int, int] | None:
    """(raw partition, raw offset, received-at ms) a dead letter came from; None when it did
    not come from `raw_topic` or its headers are unreadable."""
    headers = raw_record.header_map(record.headers)
    if headers.get(dlq.SOURCE_TOPIC) != raw_topic.encode():
        return None
    numbers = [
        headers.get(name, b"")
        for name in (dlq.SOURCE_PARTITION, dlq.SOURCE_OFFSET, raw_record.RECEIVED_AT)
    ]
    if not all(number.isdigit() for number in numbers):
        return None
    partition, offset, received_at_ms = (int(number) for number in numbers)
    return partition, offset, received_at_ms


async def dead_letter_events(
    reader: Reader,
    settings: ProcessorSettings,
    *,
    since_ms: int,
    until_ms: int,
    dlq_ends: dict[TopicPartition, int],
    live: LiveProgress,
    report: ReplayReport,
) -> AsyncIterator[Derived]:
    """The events of the dead letters of records received in [since_ms, until_ms) that the
    live processor has settled (`LiveProgress.settled`), re-run through the pipeline of their
    raw partition.

    Reads the DLQ partition by partition up to `dlq_ends`, so two calls give the same events.
    """
    raw = settings.topics.raw.name
    pipelines: dict[int, PartitionPipeline] = {}
    dlq_partitions = sorted(dlq_ends)
    # A record is dead-lettered after it is received: nothing of the range is timestamped
    # before `since_ms`.
    starts = await reader.offsets_at(dlq_partitions, since_ms)
    for tp in dlq_partitions:
        async for batch in reader.batches(tp, starts[tp], dlq_ends[tp]):
            for record in batch:
                source = _source_of(record, raw)
                if source is None or not since_ms <= source[2] < until_ms:
                    continue
                partition, offset, received_at_ms = source
                if not live.settled(partition, offset, received_at_ms):
                    report.unsettled += 1
                    continue
                report.read += 1
                pipeline = pipelines.get(partition)
                if pipeline is None:
                    pipeline = pipelines[partition] = PartitionPipeline.from_settings(
                        settings, raw, partition
                    )
                outcome = pipeline.process(record.value, offset, record.headers, received_at_ms)
                event = _offered(outcome, report)
                if event is not None:
                    yield event
            for pipeline in pipelines.values():
                pipeline.commit()


async def raw_events(
    reader: Reader,
    settings: ProcessorSettings,
    *,
    since_ms: int,
    until_ms: int,
    report: ReplayReport,
) -> AsyncIterator[Derived]:
    """The events of the raw records received in [since_ms, until_ms), judged as live: each
    partition's pipeline state is first restored from the dedupe span before `since_ms`."""
    raw = settings.topics.raw.name
    partitions = await reader.partitions(raw)
    if not partitions:
        raise SettingsError(f"KAFKA_TOPIC_RAW: topic {raw!r} does not exist")
    for tp in partitions:
        pipeline = PartitionPipeline.from_settings(settings, raw, tp.partition)
        restore_from = (await reader.offsets_at([tp], since_ms - pipeline.restore_span_ms))[tp]
        start = (await reader.offsets_at([tp], since_ms))[tp]
        stop = (await reader.offsets_at([tp], until_ms))[tp]
        async for batch in reader.batches(tp, restore_from, stop):
            for record in batch:
                outcome = pipeline.process(
                    record.value, record.offset, record.headers, record.timestamp
                )
                if record.offset < start:
                    report.restored += 1
                    continue
                report.read += 1
                event = _offered(outcome, report)
                if event is not None:
                    yield event
            pipeline.commit()
