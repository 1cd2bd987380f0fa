"""Reading topics back in tests: what a test asserts about Kafka, it reads from Kafka."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

ReadTopic = Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]


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


async def topic_size(bootstrap: str, topic: str) -> int:
    """How many records a topic holds, from its offsets: instant, unlike reading it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(topic, partition)
            for partition in cluster.partitions_for_topic(topic) or ()
        ]
        assert partitions, f"topic {topic} does not exist"
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return sum(ends[tp] - beginnings[tp] for tp in partitions)
    finally:
        await consumer.stop()
