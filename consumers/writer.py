"""What a batch of outcomes becomes in Kafka: events, dead letters, and the counts of each.

The processor and the replay command both turn `PartitionPipeline` outcomes into writes the
same way, through this class: events into record batches, one per events partition, built
here rather than one `send()` each (aiokafka's per-record path, with a metadata check, the
partitioner and a future per record, costs about as much as the whole pipeline); dead letters
as single records with the raw value untouched and `dlq-*` headers; duplicates only counted.

`add` only collects (no I/O, so the per-record path never waits); `send` hands everything
collected to the producer, and `delivered` waits until Kafka has written all of it, raising
the first failure. Counts describe what was collected since the last `clear`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer

from consumers.dlq import dead_letter_headers
from consumers.partitioning import EventPartitioner
from consumers.processor.pipeline import DeadLetter, Emit, Outcome


class OutcomeWriter:
    __slots__ = (
        "_batches",
        "_dead",
        "_dlq",
        "_events",
        "_full",
        "_partitioner",
        "dead_letters",
        "deliveries",
        "duplicates",
        "emitted",
        "producer",
    )

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        events_topic: str,
        dlq_topic: str,
        partitioner: EventPartitioner,
    ) -> None:
        self.producer = producer
        self._events = events_topic
        self._dlq = dlq_topic
        self._partitioner = partitioner
        self._batches: dict[int, Any] = {}  # events partition -> open record batch
        self._full: list[tuple[int, Any]] = []  # closed batches not sent yet, in order
        self._dead: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.emitted = 0
        self.duplicates = 0
        self.dead_letters: Counter[str] = Counter()

    @property
    def pending(self) -> bool:
        """Collected and not sent yet."""
        return bool(self._batches or self._full or self._dead)

    def add(self, outcome: Outcome, record: Any) -> None:
        """Collect the write for one raw `record`'s outcome (a ConsumerRecord)."""
        if type(outcome) is Emit:
            partition = self._partitioner.partition(outcome.key, record.key)
            batch = self._batches.get(partition)
            if batch is None:
                batch = self._batches[partition] = self.producer.create_batch()
            if not batch.append(
                timestamp=None, key=outcome.key, value=outcome.value, headers=outcome.headers
            ):
                batch.close()
                self._full.append((partition, batch))
                batch = self._batches[partition] = self.producer.create_batch()
                batch.append(  # an empty batch takes any one record
                    timestamp=None, key=outcome.key, value=outcome.value, headers=outcome.headers
                )
            self.emitted += 1
        elif type(outcome) is DeadLetter:
            headers = dead_letter_headers(
                record.headers,
                reason=outcome.reason,
                detail=outcome.detail,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            self._dead.append((record.key, record.value, headers))
            self.dead_letters[outcome.reason] += 1
        else:
            self.duplicates += 1

    async def send(self) -> None:
        """Hand what was collected to the producer (inside the caller's transaction)."""
        producer, deliveries = self.producer, self.deliveries
        for partition, batch in self._batches.items():
            batch.close()  # nothing else may join it: its records are in pipeline order
            self._full.append((partition, batch))
        self._batches.clear()
        for partition, batch in self._full:
            deliveries.append(await producer.send_batch(batch, self._events, partition=partition))
        self._full.clear()
        for key, value, headers in self._dead:
            deliveries.append(await producer.send(self._dlq, value, key=key, headers=headers))
        self._dead.clear()

    async def delivered(self) -> None:
        """Return once Kafka wrote every record sent; raise the first failure."""
        for delivery in self.deliveries:
            await delivery

    def clear(self, producer: AIOKafkaProducer | None = None) -> None:
        """Forget what was collected and sent (committed, or abandoned) and reset the counts;
        optionally switch to a new producer. Deliveries still in flight are marked as seen,
        so that their failure is not logged as an exception nobody retrieved."""
        for delivery in self.deliveries:
            delivery.add_done_callback(_retrieve)
        self.deliveries = []
        self._batches.clear()
        self._full.clear()
        self._dead.clear()
        self.emitted = self.duplicates = 0
        self.dead_letters = Counter()
        if producer is not None:
            self.producer = producer


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()
