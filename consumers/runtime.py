"""The processor's Kafka I/O: consume raw, write events and dead letters, exactly once.

Consume-transform-produce with Kafka transactions. Each batch's output and the consumed
offsets commit in one transaction, so after any crash the group resumes exactly where the
last committed output ends, and `read_committed` readers never see output of a batch that
did not commit.

Fencing without KIP-447. aiokafka speaks the classic transaction protocol: an offset commit
inside a transaction does not carry the consumer group's generation, so the broker cannot tell
a zombie (an instance that lost its partitions but does not know yet) from the owner. Fencing
therefore rests on transactional ids alone, one per input partition:
`<prefix>.<raw topic>.<partition>`, shared by whichever instance owns that partition. On
assignment the new owner first initialises its producer with that id (`_fence`). The
coordinator then bumps the id's epoch, which (1) completes whatever transaction the previous
owner left open (it aborts it, or lets an already-prepared commit finish) and (2) makes every
later write or commit by the previous owner fail with ProducerFenced. Only after that does the
new owner read the committed offset, so it sees the outcome of the old owner's last
transaction and neither re-emits nor skips what that transaction covered. A fenced instance
stops (exit status 3) and is restarted by its orchestrator, rejoining with a fresh state.

A transaction commits only if every record it carries was written. aiokafka 0.14 does not
keep the producer contract that a failed send fails the commit: a batch that fails for good
only fails its records' futures, and `commit_transaction` then commits the rest together with
the consumed offsets. A broker outage longer than the producer's request timeout (40 s) does
exactly that: batches held without a partition leader expire (LeaderNotAvailable), every later
batch of the partition is refused (OutOfOrderSequenceNumber), and the transaction would commit
offsets over events never written. So `_commit` awaits every record's delivery before it
commits, and any failed send, there or in `send()` itself (which raises once its buffer has
waited a request timeout), rewinds the partition instead of committing or crashing. (In
aiokafka: `MessageAccumulator.drain_by_nodes` expires leaderless batches even for transactional
producers, and `SendProduceReqHandler` fails a batch without touching the transaction manager;
no upstream issue covers it yet, aio-libs/aiokafka#1017 reports the sequence errors after an
outage.)

State. Each partition's dedupe window and latency join are rebuilt on assignment by re-reading
the raw topic: records timestamped within `replay_span_ms` before the committed position are
fed through the same pipeline (its output thrown away), which gives the state the previous
owner had (the state modules are deterministic in the record sequence). If this instance owned
the partition until a moment ago and the committed offset has not moved since, it keeps its
state and skips the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from common.startup import until_kafka_answers
from common.topics import ensure_topics
from consumers.dlq import dead_letter_headers
from consumers.instruments import ProcessorMetrics
from consumers.partitioning import EventPartitioner
from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import DeadLetter, Emit, PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.window import DedupeWindow
from consumers.settings import ProcessorSettings

log = logging.getLogger("consumers.processor")

FENCED_ERRORS = (ProducerFenced, InvalidProducerEpoch)
RETRY_PAUSE_S = 1.0


class ProcessorFenced(RuntimeError):
    """Another instance owns one of our partitions now; this one must stop writing."""


@dataclass
class PartitionTask:
    """One owned partition: its pipeline, its transactional producer and its offsets."""

    tp: TopicPartition
    pipeline: PartitionPipeline
    partitioner: EventPartitioner
    producer: AIOKafkaProducer
    committed_offset: int
    next_offset: int
    in_transaction: bool = False
    deliveries: list[asyncio.Future[Any]] = field(default_factory=list)
    emitted: int = 0
    duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)

    def reset_counts(self) -> None:
        self.deliveries.clear()
        self.emitted = self.duplicates = 0
        self.dead_letters.clear()


class ProcessorRuntime(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, settings: ProcessorSettings, metrics: ProcessorMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._raw = settings.topics.raw.name
        self._events = settings.topics.events.name
        self._dlq = settings.topics.dlq.name
        self._identity = Identity.from_fields(settings.identity_fields or None)
        self._privacy = Privacy.from_settings(settings)
        options = settings.kafka.client_options()
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=settings.group_id,
            client_id="postback-processor",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
        )
        self._tasks: dict[TopicPartition, PartitionTask] = {}
        # Pipelines of partitions revoked from us, with the offset they are valid at.
        self._parked: dict[TopicPartition, tuple[PartitionPipeline, int]] = {}
        # Partitions assigned but still being opened (fenced, restored) in the background.
        self._opening: dict[TopicPartition, asyncio.Task[None]] = {}
        self._open_failed: BaseException | None = None
        self._lock = asyncio.Lock()
        self._fenced: ProcessorFenced | None = None
        self.started = False

    @property
    def assigned(self) -> list[int]:
        """Partitions being processed (opened: fenced and restored)."""
        return sorted(tp.partition for tp in self._tasks)

    async def start(self) -> None:
        topics = self._settings.topics
        async for attempt in until_kafka_answers(self._settings.kafka):
            with attempt:
                await ensure_topics(
                    self._settings.kafka, topics.all(), create_missing=topics.create_missing
                )
        await self._consumer.start()
        self._consumer.subscribe([self._raw], listener=self)
        self.started = True

    async def run(self, stop: asyncio.Event) -> None:
        """Process until `stop` is set; then finish the open transactions and leave the group."""
        interval_s = self._settings.commit_interval_ms / 1000
        next_commit = time.monotonic() + interval_s
        uncommitted = 0
        try:
            while not stop.is_set():
                wait_ms = max(0, int((next_commit - time.monotonic()) * 1000))
                batches = await self._consumer.getmany(
                    timeout_ms=wait_ms, max_records=self._settings.commit_max_records
                )
                async with self._lock:
                    self._raise_if_fenced()
                    if self._open_failed is not None:
                        raise self._open_failed
                    for tp, records in batches.items():
                        task = self._tasks.get(tp)
                        if task is None:
                            continue  # revoked while we waited
                        # A fetch that raced an assignment can return records from before
                        # the seek to the committed offset; they come again in order.
                        if records[0].offset < task.next_offset:
                            records = [r for r in records if r.offset >= task.next_offset]
                            if not records:
                                continue
                        await self._process(task, records)
                        uncommitted += len(records)
                    if uncommitted >= self._settings.commit_max_records or (
                        time.monotonic() >= next_commit
                    ):
                        await self._commit_all()
                        uncommitted = 0
                        next_commit = time.monotonic() + interval_s
        finally:
            await self._shutdown()

    async def _process(self, task: PartitionTask, records: list[Any]) -> None:
        """Feed a batch through the pipeline into the partition's open transaction.

        A send that fails (the cluster gone for longer than the producer's request timeout)
        abandons the whole transaction: the partition rewinds and the batch is read again.
        """
        try:
            await self._send_outcomes(task, records)
        except FENCED_ERRORS as error:
            self._fenced = ProcessorFenced(f"partition {task.tp.partition}: {error!r}")
        except KafkaError as error:
            await self._abandon(task, "sending to Kafka failed", error)

    async def _send_outcomes(self, task: PartitionTask, records: list[Any]) -> None:
        producer = task.producer
        if not task.in_transaction:
            await producer.begin_transaction()
            task.in_transaction = True
        process = task.pipeline.process
        route = task.partitioner.partition
        # Events go out in record batches built here, one per events partition, rather than
        # one `send()` each: aiokafka's per-record path (metadata check, partitioner, a future
        # per record) costs about as much as the whole pipeline.
        batches: dict[int, Any] = {}
        for record in records:
            outcome = process(record.value, record.offset, record.headers, record.timestamp)
            if type(outcome) is Emit:
                partition = route(outcome.key, record.key)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if not batch.append(
                    timestamp=None, key=outcome.key, value=outcome.value, headers=outcome.headers
                ):
                    await self._send_batch(task, batch, partition)
                    batch = batches[partition] = producer.create_batch()
                    batch.append(  # an empty batch takes any one record
                        timestamp=None,
                        key=outcome.key,
                        value=outcome.value,
                        headers=outcome.headers,
                    )
                task.emitted += 1
            elif type(outcome) is DeadLetter:
                headers = dead_letter_headers(
                    record.headers,
                    reason=outcome.reason,
                    detail=outcome.detail,
                    topic=task.tp.topic,
                    partition=task.tp.partition,
                    offset=record.offset,
                )
                task.deliveries.append(
                    await producer.send(self._dlq, record.value, key=record.key, headers=headers)
                )
                task.dead_letters[outcome.reason] = task.dead_letters.get(outcome.reason, 0) + 1
            else:
                task.duplicates += 1
        for partition, batch in batches.items():
            await self._send_batch(task, batch, partition)
        task.next_offset = records[-1].offset + 1
        self._metrics.consumed.inc(len(records))

    async def _send_batch(self, task: PartitionTask, batch: Any, partition: int) -> None:
        batch.close()  # nothing else may join it: its records are in pipeline order
        task.deliveries.append(
            await task.producer.send_batch(batch, self._events, partition=partition)
        )

    async def _commit_all(self) -> None:
        """Commit every open transaction; partitions commit concurrently, each on its own id."""
        open_tasks = [task for task in self._tasks.values() if task.in_transaction]
        if open_tasks:
            await asyncio.gather(*(self._commit(task) for task in open_tasks))
        self._raise_if_fenced()

    async def _commit(self, task: PartitionTask) -> None:
        """Commit the partition's transaction once every record in it was written.

        The deliveries are awaited before `commit_transaction` because aiokafka would commit
        over a failed one (see the module docstring); `commit_transaction` flushes the same
        batches first anyway, so waiting for them costs nothing.
        """
        started = time.perf_counter()
        try:
            await task.producer.send_offsets_to_transaction(
                {task.tp: task.next_offset}, self._settings.group_id
            )
            for delivery in task.deliveries:
                await delivery  # raises the send's error
            await task.producer.commit_transaction()
        except FENCED_ERRORS as error:
            self._fenced = ProcessorFenced(f"partition {task.tp.partition}: {error!r}")
            return
        except KafkaError as error:
            await self._abandon(task, "transaction failed", error)
            return
        self._metrics.transaction_seconds.observe(time.perf_counter() - started)
        self._metrics.transactions.labels("committed").inc()
        task.in_transaction = False
        task.pipeline.commit()
        task.committed_offset = task.next_offset
        self._record_commit(task)

    def _record_commit(self, task: PartitionTask) -> None:
        metrics = self._metrics
        metrics.emitted.inc(task.emitted)
        metrics.duplicates.inc(task.duplicates)
        for reason, count in task.dead_letters.items():
            metrics.dead_letters.labels(reason).inc(count)
        task.reset_counts()
        label = str(task.tp.partition)
        highwater = self._consumer.highwater(task.tp)
        if highwater is not None:
            metrics.lag.labels(label).set(max(0, highwater - task.committed_offset))
        window = task.pipeline.window
        metrics.dedupe_keys.labels(label).set(len(window))
        metrics.dedupe_bytes.labels(label).set(window.approx_bytes())
        metrics.dedupe_evicted_early.labels(label).set(window.evicted_early)
        metrics.latency_waiting.labels(label).set(len(task.pipeline.latency))

    async def _abandon(self, task: PartitionTask, what: str, error: KafkaError) -> None:
        log.warning(
            "%s; rewinding the partition to its committed offset",
            what,
            extra={"fields": {"partition": task.tp.partition, "error": repr(error)}},
        )
        await self._rewind(task)

    async def _rewind(self, task: PartitionTask) -> None:
        """Undo an uncommitted batch: new producer (which aborts the open transaction),
        state back to the last commit, and the consumer back to the committed offset."""
        self._metrics.transactions.labels("aborted").inc()
        for delivery in task.deliveries:
            # Retrieved, now or when it fails, so asyncio does not log it as lost.
            delivery.add_done_callback(_retrieve)
        task.reset_counts()
        task.pipeline.abort()
        task.in_transaction = False
        # Fence before stopping: aiokafka's stop() first flushes the unsent batches, which
        # during an outage waits for the cluster, and cutting that wait short skips closing
        # the client (its connections and metadata task leak). Once the new producer holds
        # the id, the broker refuses the old one's batches and its stop() ends promptly.
        abandoned, task.producer = task.producer, await self._fenced_producer(task.tp)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await abandoned.stop()
        task.next_offset = task.committed_offset
        self._consumer.seek(task.tp, task.committed_offset)

    def _raise_if_fenced(self) -> None:
        if self._fenced is not None:
            raise self._fenced

    # ------------------------------------------------------------------ rebalance callbacks

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what was processed, so the next owner starts right after it."""
        await self._cancel_opening(revoked)
        async with self._lock:
            for tp in revoked:
                task = self._tasks.pop(tp, None)
                if task is None:
                    continue
                if task.in_transaction and self._fenced is None:
                    await self._commit(task)
                with contextlib.suppress(Exception):
                    await task.producer.stop()
                if not task.in_transaction:
                    self._parked[tp] = (task.pipeline, task.committed_offset)
                self._metrics.forget_partition(tp.partition)
            self._metrics.assigned_partitions.set(len(self._tasks))
            log.info("partitions revoked", extra={"fields": {"partitions": _ids(revoked)}})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Open new partitions in the background, paused until they are ready.

        Done here, one partition's restore would hold up every other partition, and an
        exception would vanish: aiokafka logs and drops what a rebalance callback raises.
        """
        for tp in sorted(assigned):
            if tp not in self._tasks and tp not in self._opening:
                self._consumer.pause(tp)
                self._opening[tp] = asyncio.create_task(self._open_paused(tp))
        log.info("partitions assigned", extra={"fields": {"partitions": _ids(assigned)}})

    async def _open_paused(self, tp: TopicPartition) -> None:
        try:
            task = await self._open(tp)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - surfaced by the processing loop
            log.error(
                "could not open a partition",
                extra={"fields": {"partition": tp.partition, "error": repr(error)}},
            )
            self._open_failed = error
            return
        try:
            async with self._lock:
                if self._opening.get(tp) is not asyncio.current_task():
                    raise asyncio.CancelledError  # revoked just as it finished opening
                del self._opening[tp]
                self._tasks[tp] = task
                self._metrics.assigned_partitions.set(len(self._tasks))
                self._consumer.resume(tp)
        except asyncio.CancelledError:  # revoked while waiting for the lock
            await _stopped(task.producer)
            raise
        log.info("partition ready", extra={"fields": {"partition": tp.partition}})

    async def _cancel_opening(self, partitions: list[TopicPartition] | None = None) -> None:
        """Stop opening `partitions` (all when None): they are no longer ours."""
        chosen = list(self._opening) if partitions is None else partitions
        for tp in chosen:
            opening = self._opening.pop(tp, None)
            if opening is not None:
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening

    async def _open(self, tp: TopicPartition) -> PartitionTask:
        producer = await self._fenced_producer(tp)
        try:
            return await self._open_with(tp, producer)
        except BaseException:
            await _stopped(producer)
            raise

    async def _open_with(self, tp: TopicPartition, producer: AIOKafkaProducer) -> PartitionTask:
        # Only now, with the previous owner fenced, is the committed offset final.
        committed = await self._consumer.committed(tp)
        if committed is None:
            committed = (await self._consumer.beginning_offsets([tp]))[tp]
        parked = self._parked.pop(tp, None)
        if parked is not None and parked[1] == committed:
            pipeline = parked[0]
        else:
            pipeline = self._new_pipeline(tp)
            await self._restore(tp, pipeline, committed)
        self._consumer.seek(tp, committed)
        return PartitionTask(
            tp=tp,
            pipeline=pipeline,
            partitioner=await self._partitioner(tp, producer),
            producer=producer,
            committed_offset=committed,
            next_offset=committed,
        )

    async def _partitioner(
        self, tp: TopicPartition, producer: AIOKafkaProducer
    ) -> EventPartitioner:
        raw_partitions = self._consumer.partitions_for_topic(tp.topic)
        events_partitions = await producer.partitions_for(self._events)
        return EventPartitioner(
            tp.partition, len(raw_partitions) if raw_partitions else None, len(events_partitions)
        )

    async def _fenced_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """A started producer holding the partition's transactional id, zombies fenced.

        Retries while the cluster is unreachable: the partition cannot move on without it.
        """
        transactional_id = f"{self._settings.transactional_id_prefix}.{tp.topic}.{tp.partition}"
        while True:
            producer = AIOKafkaProducer(
                **self._settings.kafka.client_options(),
                client_id=f"postback-processor-{tp.partition}",
                transactional_id=transactional_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                # Events are ~1 KB: the 16 KB default fills every ~14 records and each full
                # batch is its own produce request. Stay under the broker's 1 MiB limit.
                max_batch_size=512 * 1024,
            )
            try:
                await producer.start()
                # Starting a transaction obtains the producer id (InitProducerId): this bumps
                # the epoch and completes the previous owner's open transaction.
                await producer.begin_transaction()
                await producer.abort_transaction()
            except KafkaError as error:
                log.warning(
                    "could not initialise the transactional producer; retrying",
                    extra={"fields": {"partition": tp.partition, "error": repr(error)}},
                )
                await _stopped(producer)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            except BaseException:  # cancelled: the partition was revoked, or we stop
                await _stopped(producer)
                raise
            return producer

    def _new_pipeline(self, tp: TopicPartition) -> PartitionPipeline:
        return PartitionPipeline(
            tp.topic,
            tp.partition,
            identity=self._identity,
            window=DedupeWindow(self._settings.dedupe_window_ms, self._settings.dedupe_max_keys),
            latency=LatencyJoin(self._settings.latency_max_age_ms),
            privacy=self._privacy,
        )

    async def _restore(self, tp: TopicPartition, pipeline: PartitionPipeline, until: int) -> None:
        """Re-read the raw records that shape the state at `until` and replay them."""
        started = time.perf_counter()
        # A consumer of its own: partitions restore side by side, and one still restoring
        # holds up no other.
        restorer = AIOKafkaConsumer(
            **self._settings.kafka.client_options(),
            client_id=f"postback-processor-restore-{tp.partition}",
            enable_auto_commit=False,
            # If retention already deleted the start of the span, replay what is left.
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        try:
            await restorer.start()
            restorer.assign([tp])
            replayed = await self._replay(restorer, tp, pipeline, until)
        finally:
            await _stopped(restorer)
        elapsed = time.perf_counter() - started
        self._metrics.restore_seconds.observe(elapsed)
        self._metrics.restored_records.inc(replayed)
        log.info(
            "partition state restored",
            extra={
                "fields": {
                    "partition": tp.partition,
                    "records": replayed,
                    "keys": len(pipeline.window),
                    "seconds": round(elapsed, 3),
                }
            },
        )

    async def _replay(
        self,
        restorer: AIOKafkaConsumer,
        tp: TopicPartition,
        pipeline: PartitionPipeline,
        until: int,
    ) -> int:
        """Feed the records before `until` that shape the state through `pipeline.restore`."""
        beginning = (await restorer.beginning_offsets([tp]))[tp]
        if until <= beginning:
            return 0
        restorer.seek(tp, until - 1)
        last = await restorer.getone()
        since_ms = last.timestamp - pipeline.replay_span_ms
        found = await restorer.offsets_for_times({tp: since_ms})
        start = found[tp].offset if found.get(tp) is not None else beginning
        restorer.seek(tp, start)
        position = start
        replayed = 0
        while position < until:
            batches = await restorer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batches.get(tp, []):
                if record.offset >= until:
                    break
                pipeline.restore(record.value, record.offset, record.headers, record.timestamp)
                replayed += 1
            pipeline.commit()
            position = await restorer.position(tp)
        return replayed

    async def _shutdown(self) -> None:
        """Finish open transactions (or leave them to be aborted if fenced), leave the group."""
        await self._cancel_opening()
        async with self._lock:
            if self._fenced is None:
                with contextlib.suppress(ProcessorFenced):
                    await self._commit_all()
            for task in self._tasks.values():
                with contextlib.suppress(Exception):
                    await task.producer.stop()
            self._tasks.clear()
        # Leaving the group lets the remaining instances take over at once. The revoke
        # callback runs again here and finds nothing left to commit.
        await self._consumer.stop()


async def _stopped(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop a client; shielded, so that the stop completes even if the caller is cancelled
    while waiting for it (the cancellation still reaches the caller)."""
    with contextlib.suppress(Exception):
        await asyncio.shield(client.stop())


def _ids(partitions: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()
