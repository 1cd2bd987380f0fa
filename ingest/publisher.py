"""Writes raw records to Kafka and knows whether Kafka is healthy.

The edge answers 200 only after `publish` returns, i.e. after every in-sync replica has the
record (acks=all, idempotent producer): a 200 makes the provider forget the postback. A
publish that cannot finish within the caller's deadline raises instead of waiting on, and the
record it started may still be written later; the provider then retries a postback we do
have, which the processor's dedupe absorbs. Duplicates are recoverable, losses are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from common.kafka import KafkaSettings
from common.partitioning import default_partition
from common.startup import until_kafka_answers
from common.topics import TopicSpec, ensure_topics
from ingest.records import RawRecord

log = logging.getLogger(__name__)

# Errors after which an idempotent producer never writes to the partition again. aiokafka
# numbers a batch when it leaves the queue; a batch that then expires unsent (the cluster gone
# for longer than the request timeout) leaves a gap in the sequence that the broker refuses
# from then on (aio-libs/aiokafka#1017). Only a new producer id starts a fresh sequence.
WEDGED_PRODUCER_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)


class PublishError(Exception):
    """The record is not known to be in Kafka; the caller must not acknowledge it."""


class Publisher(Protocol):
    """The narrow interface the edge needs from its sink."""

    @property
    def kafka_up(self) -> bool: ...

    def outage_seconds(self) -> float: ...

    async def start(self) -> None: ...

    async def publish(self, record: RawRecord) -> None:
        """Return once Kafka acknowledged the record; raise PublishError if it refused.

        Unbounded by itself: the caller cancels at its deadline. Cancelling abandons the
        wait, never the write, which may still land (and be deduplicated downstream).
        """

    async def stop(self, within_s: float) -> None: ...


class KafkaHealth:
    """Whether Kafka answered lately: set by every write and by a periodic metadata probe.

    The outage start is what on-call needs first: the provider drops a postback after about
    five retries five minutes apart, so the outage's length says how much is at risk.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failing_since: float | None = None

    @property
    def up(self) -> bool:
        return self._failing_since is None

    def succeeded(self) -> None:
        if self._failing_since is not None:
            log.info(
                "Kafka is reachable again",
                extra={"fields": {"outage_seconds": round(self.outage_seconds(), 3)}},
            )
            self._failing_since = None

    def failed(self) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()
            log.error("Kafka is failing; answering 503 so the provider retries")

    def outage_seconds(self) -> float:
        if self._failing_since is None:
            return 0.0
        return self._clock() - self._failing_since


class KafkaPublisher:
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: TopicSpec,
        *,
        create_topic: bool = True,
        linger_ms: int = 0,
        probe_interval_s: float = 5.0,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._create_topic = create_topic
        self._linger_ms = linger_ms
        self._probe_interval_s = probe_interval_s
        self._producer: AIOKafkaProducer | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._replacing: asyncio.Task[None] | None = None
        # The topic's partition count as the producer's metadata last said (0: not known yet,
        # then aiokafka picks the partition itself, the same way but slower).
        self._partitions = 0
        self.health = KafkaHealth()

    @property
    def kafka_up(self) -> bool:
        return self._producer is not None and self.health.up

    def outage_seconds(self) -> float:
        return self.health.outage_seconds()

    async def start(self) -> None:
        """Connect and check the topic, retrying while the cluster is unreachable.

        A missing topic that may not be created is not retried: it needs a person.
        """
        async for attempt in until_kafka_answers(self._kafka):
            with attempt:
                await ensure_topics(self._kafka, [self._topic], create_missing=self._create_topic)
                self._producer = await self._started_producer()
        assert self._producer is not None  # until_kafka_answers returns only on success
        self._watch_metadata(self._producer)
        self._probe_task = asyncio.create_task(self._probe_forever(), name="kafka-probe")

    async def _started_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self._kafka.client_options(),
            client_id="postback-edge",
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def publish(self, record: RawRecord) -> None:
        producer = self._producer
        if producer is None:
            raise PublishError("the Kafka producer is not started")
        partitions = self._partitions
        try:
            delivery = await producer.send(
                self._topic.name,
                record.value,
                key=record.key,
                partition=default_partition(record.key, partitions) if partitions else None,
                headers=record.headers,
                timestamp_ms=record.timestamp_ms,
            )
            # A caller giving up (cancelling at its deadline) cancels this record's future
            # only, never the write: aiokafka sends the batch and resolves the other records'
            # futures regardless (its documented behaviour for the future `send` returns).
            await delivery
        except asyncio.CancelledError:
            self.health.failed()
            raise
        except KafkaError as error:
            self.health.failed()
            if isinstance(error, WEDGED_PRODUCER_ERRORS):
                self._replace(producer, error)
            raise PublishError(f"{type(error).__name__}: {error}") from error
        self.health.succeeded()

    def _replace(self, wedged: AIOKafkaProducer, error: KafkaError) -> None:
        """Swap in a new producer for one that can no longer write; once, however many
        publishes saw the error. Postbacks meanwhile get 503 and come back as retries."""
        if self._producer is not wedged or self._replacing is not None:
            return
        log.error(
            "the Kafka producer can no longer write after an outage; replacing it",
            extra={"fields": {"error": f"{type(error).__name__}: {error}"}},
        )
        self._replacing = asyncio.create_task(self._swap(wedged), name="producer-replace")

    async def _swap(self, wedged: AIOKafkaProducer) -> None:
        try:
            async for attempt in until_kafka_answers(self._kafka, forever=True):
                with attempt:
                    producer = await self._started_producer()
            self._producer = producer
            self._watch_metadata(producer)
            log.info("the Kafka producer was replaced")
        finally:
            self._replacing = None
        # Its unsent batches can only fail now; nothing it holds was acknowledged.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._probe_interval_s):
                await wedged.stop()

    def _watch_metadata(self, producer: AIOKafkaProducer) -> None:
        """Keep the partition count current on every metadata refresh, so that a grown topic
        is used whole."""
        cluster = producer.client.cluster
        cluster.add_listener(self._metadata_updated)
        self._metadata_updated(cluster)

    def _metadata_updated(self, cluster: ClusterMetadata) -> None:
        partitions = cluster.partitions_for_topic(self._topic.name)
        self._partitions = len(partitions) if partitions else 0

    async def _probe_forever(self) -> None:
        """Notice an outage (and its end) while no postbacks arrive to tell us."""
        while True:
            await asyncio.sleep(self._probe_interval_s)
            producer = self._producer
            if producer is None:
                return
            try:
                async with asyncio.timeout(self._probe_interval_s):
                    await producer.client.fetch_all_metadata()
            except (TimeoutError, KafkaError, OSError):
                self.health.failed()
            else:
                self.health.succeeded()

    async def stop(self, within_s: float) -> None:
        """Flush what is buffered and disconnect, within `within_s` seconds.

        Records still unsent when time runs out were never acknowledged to the provider, so
        giving up on them loses nothing: the provider will retry them.
        """
        for task in (self._probe_task, self._replacing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(within_s):
                await producer.stop()
        except TimeoutError:
            log.error("Kafka producer did not flush within the drain time")
