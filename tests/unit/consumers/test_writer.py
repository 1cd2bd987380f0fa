"""The writer: what a batch of dispositions becomes in Kafka, in order, and how it is counted.

Driven with stand-in producers that record what they are handed; tests/integration runs the
same writer against a real broker through the processor and the replay command.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from common.partitioning import default_partition
from consumers import dlq
from consumers.partitioning import EventPartitioner
from consumers.processor.pipeline import DUPLICATE, DeadLetter, Emit
from consumers.writer import DispositionWriter
from tests.unit.consumers.standins import Record, records

EVENTS, DLQ = "postbacks.events", "postbacks.dlq"
PARTITIONS = 6


class Batch:
    """A record batch that takes `capacity` records, then refuses, as a full aiokafka one."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys: list[bytes] = []
        self.closed = False

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: Any) -> bool:
        assert not self.closed, "a closed batch must not take records"
        if len(self.keys) >= self.capacity:
            return False
        self.keys.append(key)
        return True

    def close(self) -> None:
        self.closed = True


class Producer:
    """Records what is handed to it, in order; deliveries fail when told to."""

    def __init__(self, capacity: int = 100, fail: Exception | None = None) -> None:
        self.capacity = capacity
        self.fail = fail
        self.sent: list[tuple[str, int | None, list[bytes]]] = []  # topic, partition, keys
        self.dead: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def create_batch(self) -> Batch:
        return Batch(self.capacity)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed, "a batch is closed before it is sent"
        self.sent.append((topic, partition, batch.keys))
        return self._delivery()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, None, [key or b""]))
        self.dead.append((key, value, headers))
        return self._delivery()

    def _delivery(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            future.set_result(None)
        return future


def writer_for(producer: Producer) -> DispositionWriter:
    return DispositionWriter(
        producer,  # a stand-in for AIOKafkaProducer (untyped: no ignore needed)
        events_topic=EVENTS,
        dlq_topic=DLQ,
        partitioner=EventPartitioner(0, None, PARTITIONS),  # hashes every key
    )


def emit(key: bytes) -> Emit:
    return Emit(key, b'{"event": "' + key + b'"}', [("ce_id", key)])


KEYS = [f"TRK{n:04d}".encode() for n in range(40)]


async def test_events_go_out_in_one_batch_per_partition_in_pipeline_order() -> None:
    """Events keep the pipeline's order within each events partition, which is the partition
    Kafka's default partitioner gives their key; nothing is handed over before `send`."""
    producer = Producer()
    writer = writer_for(producer)
    for record, key in zip(records([b"{}"] * len(KEYS)), KEYS, strict=True):
        writer.add(emit(key), record)
    collected = writer.pending
    assert producer.sent == []
    await writer.send()
    await writer.delivered()
    expected: dict[int, list[bytes]] = {}
    for key in KEYS:
        expected.setdefault(default_partition(key, PARTITIONS), []).append(key)
    assert {partition: keys for _, partition, keys in producer.sent} == expected
    assert {topic for topic, _, _ in producer.sent} == {EVENTS}
    assert len(producer.sent) == len(expected)  # one batch each
    assert (collected, writer.pending) == (True, False)
    assert writer.emitted == len(KEYS)


async def test_a_full_batch_is_followed_by_another_in_order() -> None:
    """When a batch is full the writer starts another for that partition; together they hold
    every event once, in order."""
    producer = Producer(capacity=3)
    writer = writer_for(producer)
    same_partition = [key for key in KEYS if default_partition(key, PARTITIONS) == 2]
    assert len(same_partition) > 3
    for record, key in zip(records([b"{}"] * len(same_partition)), same_partition, strict=True):
        writer.add(emit(key), record)
    await writer.send()
    batches = [keys for _, partition, keys in producer.sent if partition == 2]
    assert all(len(keys) <= 3 for keys in batches)
    assert [key for keys in batches for key in keys] == same_partition


async def test_dead_letters_keep_the_raw_record_and_say_why() -> None:
    """A dead letter is the raw key and value untouched, with the edge's headers and dlq-*
    headers naming the reason and the record it came from."""
    producer = Producer()
    writer = writer_for(producer)
    raw = Record("postbacks.raw", 4, 981, b"raw-key", b"{broken", [("source", b"mt")], 1)
    writer.add(DeadLetter("invalid_json", "unexpected end of data"), raw)
    await writer.send()
    [(key, value, headers)] = producer.dead
    assert (key, value) == (b"raw-key", b"{broken")
    named = dict(headers)
    assert named["source"] == b"mt"
    assert named[dlq.REASON] == b"invalid_json"
    assert named[dlq.DETAIL] == b"unexpected end of data"
    assert (named[dlq.SOURCE_TOPIC], named[dlq.SOURCE_PARTITION], named[dlq.SOURCE_OFFSET]) == (
        b"postbacks.raw",
        b"4",
        b"981",
    )
    assert producer.sent == [(DLQ, None, [b"raw-key"])]


async def test_counts_describe_what_was_collected_since_the_last_clear() -> None:
    """Emitted, duplicates and dead letters by reason are counted as collected, and `clear`
    starts the count again (the runtime reports them once its transaction committed)."""
    producer = Producer()
    writer = writer_for(producer)
    raw = records([b"{}"] * 5)
    writer.add(emit(b"a"), raw[0])
    writer.add(DUPLICATE, raw[1])
    writer.add(DUPLICATE, raw[2])
    writer.add(DeadLetter("missing_code", ""), raw[3])
    writer.add(DeadLetter("missing_code", ""), raw[4])
    assert (writer.emitted, writer.duplicates, dict(writer.dead_letters)) == (
        1,
        2,
        {"missing_code": 2},
    )
    writer.clear()
    assert (writer.emitted, writer.duplicates, dict(writer.dead_letters)) == (0, 0, {})
    assert not writer.pending


async def test_clear_forgets_what_was_collected_and_switches_producer() -> None:
    """After an abort the writer starts over on the new producer: nothing collected for the
    abandoned transaction reaches it."""
    old, new = Producer(), Producer()
    writer = writer_for(old)
    writer.add(emit(b"a"), records([b"{}"])[0])
    writer.clear(new)
    await writer.send()
    assert old.sent == new.sent == []
    assert writer.producer is new


async def test_delivered_raises_the_first_failure() -> None:
    """A record Kafka did not write fails the commit: the transaction must not commit over it."""
    writer = writer_for(Producer(fail=RuntimeError("broker said no")))
    writer.add(emit(b"a"), records([b"{}"])[0])
    await writer.send()
    with pytest.raises(RuntimeError, match="broker said no"):
        await writer.delivered()
    writer.clear()


async def test_abandoned_deliveries_are_not_reported_as_unretrieved_errors() -> None:
    """Failed deliveries of an abandoned transaction are expected: clearing the writer keeps
    asyncio from logging each as an exception nobody retrieved."""
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    writer = writer_for(Producer(fail=RuntimeError("fenced")))
    writer.add(emit(b"a"), records([b"{}"])[0])
    await writer.send()
    writer.clear()
    await asyncio.sleep(0)  # the done callbacks run
    gc.collect()
    assert unretrieved == []
