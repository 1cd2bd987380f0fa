"""The processor's Kafka clients, made in one place and handed to the runtime.

The runtime never builds a client itself: it asks a `ProcessorClients` for the group consumer
of the raw topic, for a fenced transactional producer per owned partition, and for plain
readers (restoring state). Production and the integration tests use `KafkaClients` (aiokafka
against a real cluster); a test that needs a client to fail or stall on cue passes a factory
that wraps these clients, instead of patching the runtime's internals.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from consumers.settings import ProcessorSettings

log = logging.getLogger("consumers.processor")

RETRY_PAUSE_S: Final = 1.0
STOP_PATIENCE_S: Final = 10.0  # how long a client's stop may take before it is left to itself
LOG_EVERY: Final = 30  # attempts between two warnings while a producer cannot be initialised
# Events are ~1 KB: the 16 KB default fills every ~14 records and each full batch is its own
# produce request. Stay under the broker's 1 MiB limit.
MAX_BATCH_BYTES: Final = 512 * 1024
READER_FETCH_BYTES: Final = 16 * 1024 * 1024
# A reader asks for offsets of a topic it holds no metadata for yet (the raw topic beside the
# state topic it reads); aiokafka then refreshes the metadata and sleeps this long before it
# asks again. Its default, 100 ms, was a tenth of a second of every partition's rebuild.
READER_RETRY_BACKOFF_MS: Final = 20
# A reader reads up to an end offset it knows, then moves (from the last record to the first of
# the span, say). A fetch at the end would wait fetch_max_wait_ms for records that are not
# coming, and the fetch for the new position only goes out after it: aiokafka's default of
# 500 ms was half a second of every partition's rebuild.
READER_FETCH_WAIT_MS: Final = 10


class ProcessorClients(Protocol):
    """What the runtime needs from Kafka, and nothing more."""

    def group_consumer(self) -> AIOKafkaConsumer:
        """The raw topic's consumer in the processor's group (not started)."""

    async def fenced_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """A started producer holding `tp`'s transactional id, its previous holder fenced.

        Retries while the cluster is unreachable: the partition cannot move on without it.
        """

    def reader(self, name: str) -> AIOKafkaConsumer:
        """A read_committed consumer outside any group (not started), for restoring state."""


def transactional_id(settings: ProcessorSettings, tp: TopicPartition) -> str:
    """One id per raw partition, shared by whoever owns it (see docs/processor.md)."""
    return f"{settings.transactional_id_prefix}.{tp.topic}.{tp.partition}"


class KafkaClients:
    def __init__(self, settings: ProcessorSettings) -> None:
        self._settings = settings

    def group_consumer(self) -> AIOKafkaConsumer:
        settings = self._settings
        return AIOKafkaConsumer(
            **settings.kafka.client_options(),
            group_id=settings.group_id,
            client_id="postback-processor",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
            # A membership change moves only the partitions it must: an instance keeps the
            # partitions it had, and with them its state (no rebuild).
            partition_assignment_strategy=(StickyPartitionAssignor,),
        )

    async def fenced_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        attempts = 0
        while True:
            producer = self.transactional_producer(tp)
            try:
                await producer.start()
                # Starting a transaction obtains the producer id (InitProducerId): this bumps
                # the epoch and completes the previous owner's open transaction.
                await producer.begin_transaction()
                await producer.abort_transaction()
            except KafkaError as error:
                attempts += 1
                retrying("could not initialise the transactional producer", tp, error, attempts)
                await stopped(producer)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            except BaseException:  # cancelled: the partition was revoked, or we stop
                await stopped(producer)
                raise
            return producer

    def transactional_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The producer `fenced_producer` starts (a seam for tests that wrap its writes)."""
        return AIOKafkaProducer(**self.producer_options(tp))

    def producer_options(self, tp: TopicPartition) -> dict[str, Any]:
        settings = self._settings
        return {
            **settings.kafka.client_options(),
            "client_id": f"postback-processor-{tp.partition}",
            "transactional_id": transactional_id(settings, tp),
            "transaction_timeout_ms": settings.transaction_timeout_ms,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": 5,
            "max_batch_size": MAX_BATCH_BYTES,
        }

    def reader(self, name: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **self._settings.kafka.client_options(),
            client_id=f"postback-processor-{name}",
            enable_auto_commit=False,
            # If retention already deleted the start of a span, read what is left.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # A restore reads one partition from end to end as fast as it can: fewer, larger
            # fetches than a tailing consumer's (state records are up to 512 KiB each).
            max_partition_fetch_bytes=READER_FETCH_BYTES,
            fetch_max_bytes=READER_FETCH_BYTES,
            retry_backoff_ms=READER_RETRY_BACKOFF_MS,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        )


def retrying(what: str, tp: TopicPartition, error: BaseException, attempts: int) -> None:
    """Say that `what` failed and is tried again: at the first attempt, then every
    `LOG_EVERY`th, so that an outage of minutes is a few lines, not one a second."""
    if attempts % LOG_EVERY == 1:
        log.warning(
            f"{what}; retrying",
            extra={
                "fields": {"partition": tp.partition, "error": repr(error), "attempts": attempts}
            },
        )


async def stopped(
    client: AIOKafkaProducer | AIOKafkaConsumer, patience_s: float = STOP_PATIENCE_S
) -> None:
    """Stop a client, waiting `patience_s` at most; shielded, so that the stop goes on even if
    the caller is cancelled while waiting for it (the cancellation still reaches the caller).

    A producer's stop first waits until Kafka took every batch it holds, and aiokafka can
    retry a request forever to a broker back from a kill -9 (see `OwnedPartition.commit`):
    such a stop would hold up the processor's shutdown, past any orchestrator's grace period.
    Past `patience_s` the client is left to itself. That loses nothing: the processor's
    producers are transactional, and what an unfinished transaction wrote is aborted by the
    coordinator and never read; a group consumer that could not leave the group is dropped
    from it at its session timeout.
    """
    try:
        async with asyncio.timeout(patience_s):
            await asyncio.shield(client.stop())
    except TimeoutError:
        log.warning(
            "a Kafka client did not stop in time; left to itself",
            extra={"fields": {"client": type(client).__name__, "waited_s": patience_s}},
        )
    except asyncio.CancelledError:
        raise
    except Exception:  # a client failing to stop is already gone for us
        log.debug("a Kafka client did not stop cleanly", exc_info=True)
