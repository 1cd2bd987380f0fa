"""Writing and reading topics for tests and benchmarks: what a test asserts about Kafka, it reads
from Kafka."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

ReadTopic = Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]
# (key, value, headers, timestamp_ms): one record as `produce` writes it.
ProducerRecord = tuple[bytes | None, bytes, list[tuple[str, bytes]], int | None]


async def read_records(
    bootstrap: str, topic: str, count: int, timeout: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the start until `count` records arrived, committed ones only.

    Returns early with what it has after `timeout`, so a test asserting on a missing record
    fails with a readable diff instead of hanging.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic` (none when it does not exist), from fresh metadata."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records a topic holds, from its offsets: instant, unlike reading it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        assert partitions, f"topic {topic} does not exist"
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return sum(ends[tp] - beginnings[tp] for tp in partitions)
    finally:
        await consumer.stop()


async def _committed_batches(
    bootstrap: str, topic: str
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The committed records of `topic` up to its last stable offsets right now, in batches."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, batch in batches.items():
                yield [record for record in batch if record.offset < ends[tp]]
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()


async def read_all_committed(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of `topic` right now: reads up to the last stable offsets."""
    return [record async for batch in _committed_batches(bootstrap, topic) for record in batch]


async def count_committed(bootstrap: str, topic: str) -> int:
    """How many committed records `topic` holds right now, keeping none of them: its offsets
    would also count transaction markers and aborted records."""
    return sum([len(batch) async for batch in _committed_batches(bootstrap, topic)])


async def produce(
    bootstrap: str,
    topic: str,
    records: list[ProducerRecord],
) -> None:
    """Write (key, value, headers, timestamp_ms) records, all acknowledged on return."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, value, key=key, headers=headers, timestamp_ms=timestamp)
            for key, value, headers, timestamp in records
        ]
        await producer.flush()
        for delivery in deliveries:
            await delivery
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Sum of a consumer group's committed offsets on `topic` (0 for partitions without)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)
    finally:
        await admin.close()
