"""The processor's loop: consume raw, hand each partition's records to its owner, commit.

How the pieces fit (the guarantee and its reasons are in docs/processor.md):
- `ProcessorClients` makes every Kafka client (consumers/clients.py);
- an `OwnedPartition` per assigned raw partition processes its records without I/O and runs
  its own transactions (consumers/partition.py);
- opening a partition (fence its transactional id, read its committed offset, restore its
  state) runs in a task of its own, with the partition paused, beside the loop;
- a partition's commit runs in a task of its own too, paused likewise: the loop never waits
  for Kafka's answer to a write, so a partition whose brokers are slow or gone holds up
  nobody else.

This module holds the loop and the rebalance callbacks; it decides nothing about records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from functools import partial

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from common.memory import release_free_memory
from common.startup import until_kafka_answers
from common.topics import ensure_topics
from consumers.changelog import Changelog, state_topic
from consumers.clients import (
    RETRY_PAUSE_S,
    KafkaClients,
    ProcessorClients,
    retrying,
    stopped,
)
from consumers.instruments import ProcessorMetrics
from consumers.partition import OwnedPartition, PartitionLost, PartitionRevoked
from consumers.partitioning import EventPartitioner
from consumers.processor.pipeline import PartitionPipeline, configured_identity
from consumers.restore import restore
from consumers.settings import ProcessorSettings
from consumers.writer import DispositionWriter

log = logging.getLogger("consumers.processor")

TRIM_EVERY_S = 30.0  # how often freed heap memory goes back to the system (common/memory.py)
FETCH_MAX_RECORDS = 1000
"""Most records taken from the consumer at a time (a commit may span several takes).

Each record taken is a handful of small objects until the loop has processed it, and the few
long-lived objects allocated among them (dedupe and latency entries) keep the interpreter's
object arenas at that high water for good. Working through a backlog of 2.2 M records (B6),
taking 5,000 at a time left 58 MiB of arenas holding 39 MB of objects; 1,000 at a time, 44 MiB
(RSS per dedupe key 41 -> 36 bytes); alternated B3 runs showed no difference in speed."""


class ProcessorFenced(RuntimeError):
    """Another instance processed one of our partitions meanwhile; this one must stop."""


class ProcessorRuntime(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(
        self,
        settings: ProcessorSettings,
        metrics: ProcessorMetrics,
        clients: ProcessorClients | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clients = clients or KafkaClients(settings)
        self._consumer = self._clients.group_consumer()
        self._owned: dict[TopicPartition, OwnedPartition] = {}
        # Pipelines of partitions revoked from us, with the offset their state is valid at.
        self._parked: dict[TopicPartition, tuple[PartitionPipeline, int]] = {}
        # Partitions assigned but still being opened (fenced, restored) in the background.
        self._opening: dict[TopicPartition, asyncio.Task[None]] = {}
        self._failure: BaseException | None = None
        # Written with every state change; a restore that finds another rebuilds from raw.
        self._state_keys = configured_identity(settings).fingerprint
        self.started = False

    @property
    def assigned(self) -> list[int]:
        """Partitions being processed (opened: fenced and restored)."""
        return sorted(tp.partition for tp in self._owned)

    async def start(self) -> None:
        settings = self._settings
        topics = settings.topics
        span_ms = PartitionPipeline.from_settings(settings, topics.raw.name, 0).restore_span_ms
        wanted = (*topics.all(), state_topic(settings, span_ms))
        async for attempt in until_kafka_answers(settings.kafka):
            with attempt:
                await ensure_topics(settings.kafka, wanted, create_missing=topics.create_missing)
        await self._consumer.start()
        self._consumer.subscribe([topics.raw.name], listener=self)
        self.started = True

    async def run(self, stop: asyncio.Event) -> None:
        """Process until `stop` is set; then finish the open transactions and leave the group."""
        settings = self._settings
        interval_s = settings.commit_interval_ms / 1000
        max_records = settings.commit_max_records
        fetch_max_records = min(max_records, FETCH_MAX_RECORDS)
        next_trim = time.monotonic() + TRIM_EVERY_S
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=self._until_next_commit_ms(interval_s),
                    max_records=fetch_max_records,
                )
                if self._failure is not None:
                    raise self._failure
                for tp, records in batches.items():
                    owned = self._owned.get(tp)
                    if owned is None:
                        continue  # revoked while we waited
                    if owned.busy is not None:  # paused, yet fetched: read these again later
                        self._consumer.seek(tp, owned.next_offset)
                        continue
                    owned.process(records)
                now = time.monotonic()
                for owned in self._owned.values():
                    if owned.busy is None and owned.due(now, interval_s, max_records):
                        self._start_commit(owned)
                if now >= next_trim:
                    release_free_memory()
                    next_trim = now + TRIM_EVERY_S
        finally:
            await self._shutdown()

    def _until_next_commit_ms(self, interval_s: float) -> int:
        waiting = [
            owned.first_uncommitted_at
            for owned in self._owned.values()
            if owned.uncommitted and owned.busy is None
        ]
        if not waiting:
            return int(interval_s * 1000)
        # Rounded up: a wait rounded down to 0 ms would poll again and again until it is due.
        return max(0, math.ceil((min(waiting) + interval_s - time.monotonic()) * 1000))

    def _start_commit(self, owned: OwnedPartition) -> None:
        """Commit in the background, the partition paused until it is done.

        The partition may have left the consumer's assignment before the revocation callback
        runs (a processor frozen past its session timeout): nothing to pause then, and the
        commit finds out whether the partition is still ours."""
        if owned.tp in self._consumer.assignment():
            self._consumer.pause(owned.tp)
        owned.busy = asyncio.create_task(
            self._committed(owned), name=f"commit-{owned.tp.partition}"
        )

    async def _committed(self, owned: OwnedPartition) -> None:
        try:
            await owned.commit()
        except PartitionRevoked:
            pass  # the revocation drops it
        except PartitionLost as error:
            self._failure = ProcessorFenced(str(error))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - surfaced by the processing loop
            self._failure = error
        finally:
            owned.busy = None
            if self._owned.get(owned.tp) is owned and owned.tp in self._consumer.assignment():
                self._consumer.resume(owned.tp)

    # ------------------------------------------------------------------ rebalance callbacks

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what was processed, so the next owner starts right after it."""
        await self._cancel_opening(revoked)
        for tp in revoked:
            owned = self._owned.pop(tp, None)
            if owned is None:
                continue
            await self._finish(owned)
            if not owned.uncommitted:
                self._parked[tp] = (owned.pipeline, owned.committed_offset)
            self._metrics.forget_partition(tp.partition)
        self._metrics.assigned_partitions.set(len(self._owned))
        log.info("partitions revoked", extra={"fields": {"partitions": _ids(revoked)}})

    async def _finish(self, owned: OwnedPartition) -> None:
        """Let a commit in flight end, commit what is left (unless fenced), close."""
        if owned.busy is not None:
            with contextlib.suppress(Exception):
                await owned.busy
        if owned.uncommitted and self._failure is None:
            with contextlib.suppress(PartitionRevoked, PartitionLost):
                await owned.commit()
        await owned.close()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Open new partitions in the background, paused until they are ready.

        Done here, one partition's restore would hold up every other partition, and an
        exception would vanish: aiokafka logs and drops what a rebalance callback raises.
        """
        for tp in [tp for tp in self._parked if tp not in assigned]:
            del self._parked[tp]  # gone elsewhere: its state would only take memory
        for tp in sorted(assigned):
            if tp not in self._owned and tp not in self._opening:
                self._consumer.pause(tp)
                self._opening[tp] = asyncio.create_task(self._open_paused(tp))
        log.info("partitions assigned", extra={"fields": {"partitions": _ids(assigned)}})

    async def _open_paused(self, tp: TopicPartition) -> None:
        """Open `tp`, again and again while Kafka cannot be reached (an assignment can come
        just before a broker goes down): the partition stays paused meanwhile, and a
        revocation cancels the attempts. Any other failure stops the processor (exit 1)."""
        attempts = 0
        while True:
            try:
                owned = await self._open(tp)
                break
            except asyncio.CancelledError:
                raise
            except KafkaError as error:
                if not error.retriable:
                    self._open_failed(tp, error)
                    return
                attempts += 1
                retrying("could not open a partition yet", tp, error, attempts)
                await asyncio.sleep(RETRY_PAUSE_S)
            except BaseException as error:  # noqa: BLE001 - surfaced by the processing loop
                self._open_failed(tp, error)
                return
        if self._opening.get(tp) is not asyncio.current_task():
            await owned.close()  # revoked just as it finished opening
            return
        del self._opening[tp]
        self._owned[tp] = owned
        owned.report_state()
        self._metrics.assigned_partitions.set(len(self._owned))
        self._consumer.resume(tp)
        log.info("partition ready", extra={"fields": {"partition": tp.partition}})

    def _open_failed(self, tp: TopicPartition, error: BaseException) -> None:
        log.error(
            "could not open a partition",
            extra={"fields": {"partition": tp.partition, "error": repr(error)}},
        )
        self._failure = error

    async def _cancel_opening(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Stop opening `partitions` (all when None): they are no longer ours."""
        for tp in list(self._opening) if partitions is None else partitions:
            opening = self._opening.pop(tp, None)
            if opening is not None:
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening

    async def _open(self, tp: TopicPartition) -> OwnedPartition:
        """Fence the previous owner, then read where it left off, then restore the state."""
        producer = await self._clients.fenced_producer(tp)
        try:
            # Only now, with the previous owner fenced, is the committed offset final.
            committed = await self._consumer.committed(tp)
            if committed is None:
                committed = (await self._consumer.beginning_offsets([tp]))[tp]
            topics = self._settings.topics
            changelog = Changelog(self._settings.state_topic, tp.partition, self._state_keys)
            parked = self._parked.pop(tp, None)
            if parked is not None and parked[1] == committed:
                pipeline = parked[0]  # nobody processed it since it was ours: state still valid
                self._metrics.partition_opens.labels("kept").inc()
            else:
                pipeline = await restore(
                    self._clients,
                    tp,
                    partial(
                        PartitionPipeline.from_settings, self._settings, tp.topic, tp.partition
                    ),
                    committed,
                    changelog=changelog,
                    producer=producer,
                    metrics=self._metrics,
                )
            self._consumer.seek(tp, committed)
            raw_partitions = self._consumer.partitions_for_topic(tp.topic)
            events_partitions = await producer.partitions_for(topics.events.name)
            writer = DispositionWriter(
                producer,
                events_topic=topics.events.name,
                dlq_topic=topics.dlq.name,
                partitioner=EventPartitioner(
                    tp.partition,
                    len(raw_partitions) if raw_partitions else None,
                    len(events_partitions),
                ),
            )
        except BaseException:
            await stopped(producer)
            raise
        return OwnedPartition(
            tp,
            pipeline=pipeline,
            writer=writer,
            changelog=changelog,
            committed_offset=committed,
            consumer=self._consumer,
            clients=self._clients,
            group_id=self._settings.group_id,
            metrics=self._metrics,
            commit_deadline_s=self._settings.transaction_timeout_ms / 1000,
        )

    async def _shutdown(self) -> None:
        """Finish open transactions (or leave them to be aborted if fenced), leave the group."""
        log.info(
            "stopping: finishing open transactions, then leaving the group",
            extra={"fields": {"partitions": _ids(self._owned)}},
        )
        await self._cancel_opening()
        for tp in list(self._owned):
            owned = self._owned.pop(tp, None)
            if owned is not None:  # else revoked meanwhile, and finished there
                await self._finish(owned)
        # Leaving the group lets the remaining instances take over at once. The revoke
        # callback runs again here and finds nothing left to commit.
        await stopped(self._consumer)


def _ids(partitions: Iterable[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)
