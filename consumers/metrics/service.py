"""The metrics service's I/O: a Kafka consumer in its own group, and the ops HTTP server.

Offsets are auto-committed (aiokafka, every 5 s, and on rebalance and on stop). That is enough
here: the counters live in this process and restart at zero with it, which Prometheus'
`rate()`/`increase()` read as a counter reset, so nothing is gained by tying offsets to the
counters. After a crash, up to 5 s of events are read again by the next process, which only
counts them into counters that started from zero. A batch is aggregated without awaiting
anything, so an auto-commit (which runs at an await) never covers a half-counted batch.

Reads use `isolation_level="read_committed"`: the processor writes events in Kafka
transactions, and events of an aborted transaction will be written again, so counting them
would count twice.

Lifecycle: the ops server starts first, so /healthz answers and /readyz says "not ready" while
Kafka is being reached. Ready means the consumer has started and received its first partition
assignment (possibly empty: a group can have more members than partitions). On stop (SIGTERM):
the loop ends within one poll, `consumer.stop()` commits the position and leaves the group so
the partitions move at once instead of after a session timeout, then the ops server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from common.ops_http import OpsServer, ops_app
from common.startup import until_kafka_answers
from common.topics import ensure_topics
from consumers.metrics.aggregate import Aggregator
from consumers.metrics.instruments import EventInstruments
from consumers.metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS: Final = 500  # also bounds how long a stop request waits for the loop
MAX_RECORDS: Final = 1000  # per poll, so scrapes are answered between batches under load
LAG_TIMEOUT_S: Final = 1.0


class _AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Records the assignment for readiness; aiokafka commits on revoke by itself."""

    def __init__(self, service: MetricsService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service.assigned(assigned)


class MetricsService:
    """Consume events into metrics until `request_stop()`; see the module docstring."""

    def __init__(self, settings: MetricsSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self.instruments = EventInstruments(registry)
        self._aggregator = Aggregator(
            self.instruments,
            top_operators=settings.top_operators,
            top_countries=settings.top_countries,
        )
        self._ops = OpsServer(ops_app(registry, self.readiness), settings.host, settings.port)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: frozenset[int] | None = None  # None until the first assignment
        self._stop_requested = asyncio.Event()

    @property
    def port(self) -> int:
        """The ops server's port (useful when configured as 0)."""
        return self._ops.port

    def readiness(self) -> tuple[bool, dict[str, object]]:
        partitions = self._partitions
        ready = (
            self._consumer is not None
            and partitions is not None
            and not self._stop_requested.is_set()
        )
        return ready, {"partitions": sorted(partitions or ())}

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self._partitions = frozenset(tp.partition for tp in partitions)
        log.info(
            "partitions assigned",
            extra={"fields": {"partitions": sorted(self._partitions)}},
        )

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag the loop checks."""
        self._stop_requested.set()

    async def serve(self) -> None:
        """Start, consume until `request_stop()`, stop. A stop during start-up aborts it."""
        try:
            if await self._unless_stop_requested(self.start()):
                await self.run()
        finally:
            await self.stop()

    async def start(self) -> None:
        """Serve ops HTTP, then reach Kafka, retrying for KAFKA_STARTUP_TIMEOUT_SECONDS."""
        await self._ops.start()
        kafka, topic = self._settings.kafka, self._settings.topics.events
        async for attempt in until_kafka_answers(kafka):
            with attempt:
                await ensure_topics(
                    kafka, [topic], create_missing=self._settings.topics.create_missing
                )
                consumer = AIOKafkaConsumer(
                    **kafka.client_options(),
                    client_id="postback-metrics",
                    group_id=self._settings.group_id,
                    enable_auto_commit=True,
                    auto_offset_reset=self._settings.auto_offset_reset,
                    isolation_level="read_committed",
                )
                try:
                    await consumer.start()
                except BaseException:
                    await consumer.stop()
                    raise
                self._consumer = consumer
        assert self._consumer is not None  # the retry loop either set it or raised
        self._consumer.subscribe([topic.name], listener=_AssignmentListener(self))
        log.info(
            "metrics service consuming",
            extra={
                "fields": {
                    "topic": topic.name,
                    "group_id": self._settings.group_id,
                    "port": self.port,
                }
            },
        )

    async def run(self) -> None:
        """Poll, aggregate and refresh the lag until a stop is requested."""
        consumer = self._consumer
        if consumer is None:
            return
        aggregator = self._aggregator
        while not self._stop_requested.is_set():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            for records in batches.values():
                for record in records:
                    reason = aggregator.consume(record.value)
                    if reason is not None:
                        log.warning(
                            "skipped an unreadable record on the events topic",
                            extra={
                                "fields": {
                                    "reason": reason,
                                    "topic": record.topic,
                                    "partition": record.partition,
                                    "offset": record.offset,
                                }
                            },
                        )
            await self._refresh_lag(consumer)

    async def stop(self) -> None:
        """Commit, leave the group, stop serving. Idempotent."""
        self._stop_requested.set()
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                await consumer.stop()
        finally:
            await self._ops.stop()
        log.info("metrics service stopped")

    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """High water minus position for every assigned partition that has been fetched.

        A partition not fetched yet has no known high water and is left out rather than shown
        as 0, which would look healthy.
        """
        lags: dict[int, int] = {}
        try:
            async with asyncio.timeout(LAG_TIMEOUT_S):
                # High waters first, without awaiting: `highwater()` asserts the partition is
                # still assigned, which only holds until the next await.
                fetched = {
                    tp: highwater
                    for tp in consumer.assignment()
                    if (highwater := consumer.highwater(tp)) is not None
                }
                for tp, highwater in fetched.items():
                    position = await consumer.position(tp)
                    lags[tp.partition] = max(0, highwater - position)
        except (TimeoutError, IllegalStateError):
            return  # a rebalance is moving partitions; the next poll will tell
        self.instruments.set_consumer_lag(lags)

    async def _unless_stop_requested(self, work: Awaitable[None]) -> bool:
        """Run `work` unless a stop comes first (then cancel it); True when it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        task.result()
        return True
