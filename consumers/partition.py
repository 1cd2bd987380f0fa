"""One raw partition this instance owns: its pipeline, its producer, and its transactions.

Records are processed as they are fetched, without any I/O: the pipeline decides each
record's outcome and the writer collects the writes. Everything that talks to Kafka happens
in the partition's own commit, run as a task beside the processing loop, with the partition
paused meanwhile; a partition whose brokers are slow or gone holds up only itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.structs import TopicPartition

from consumers.changelog import Changelog
from consumers.clients import RETRY_PAUSE_S, ProcessorClients, stopped
from consumers.instruments import ProcessorMetrics
from consumers.processor.pipeline import PartitionPipeline
from consumers.writer import DispositionWriter

log = logging.getLogger("consumers.processor")

# How long the group's committed offset may lag behind what this instance knows it committed
# (missing, or lower) before the rewind believes what it reads.
LAGGING_OFFSET_PATIENCE_S: Final = 30.0


class PartitionLost(RuntimeError):
    """Another instance processed this partition while this one believed it owned it (a
    zombie: paused, or cut off, past its session): this instance must not write for it again."""


class PartitionRevoked(RuntimeError):
    """The group took the partition away meanwhile; the revocation cleans up."""


class OwnedPartition:
    """State and transactions of one owned raw partition. One owner drives it."""

    def __init__(
        self,
        tp: TopicPartition,
        *,
        pipeline: PartitionPipeline,
        writer: DispositionWriter,
        changelog: Changelog,
        committed_offset: int,
        consumer: AIOKafkaConsumer,
        clients: ProcessorClients,
        group_id: str,
        metrics: ProcessorMetrics,
        commit_deadline_s: float,
    ) -> None:
        self.tp = tp
        self.pipeline = pipeline
        self.writer = writer
        self.changelog = changelog
        self.committed_offset = committed_offset
        self.next_offset = committed_offset
        self._consumer = consumer
        self._clients = clients
        self._group_id = group_id
        self._metrics = metrics
        self._commit_deadline_s = commit_deadline_s
        self.uncommitted = 0  # records processed since the last commit
        self.first_uncommitted_at = 0.0  # monotonic time of the first of them
        self.last_timestamp_ms: int | None = None  # the last processed record's timestamp
        self.busy: asyncio.Task[None] | None = None  # a commit in flight

    @property
    def producer(self) -> AIOKafkaProducer:
        return self.writer.producer

    def process(self, records: list[Any]) -> None:
        """Decide each record's outcome and collect its writes; no I/O."""
        if records[0].offset < self.next_offset:
            # A fetch that raced a seek (an assignment, a rewind) can return records from
            # before it; they come again in order.
            records = [record for record in records if record.offset >= self.next_offset]
            if not records:
                return
        process, add = self.pipeline.process, self.writer.add
        for record in records:
            add(process(record.value, record.offset, record.headers, record.timestamp), record)
        if not self.uncommitted:
            self.first_uncommitted_at = time.monotonic()
        self.uncommitted += len(records)
        self.next_offset = records[-1].offset + 1
        self.last_timestamp_ms = records[-1].timestamp
        self._metrics.consumed.inc(len(records))

    def due(self, now: float, interval_s: float, max_records: int) -> bool:
        return self.uncommitted > 0 and (
            self.uncommitted >= max_records or now - self.first_uncommitted_at >= interval_s
        )

    async def commit(self) -> None:
        """Write what was processed since the last commit, in one transaction, in this order:

        1. begin the transaction and send the events, the dead letters and the state's change
           (to the state topic: a rebuild then sees exactly the committed changes);
        2. add the consumed offsets (`next_offset`) to the transaction;
        3. wait until Kafka wrote every record sent: aiokafka would commit over a failed one
           (a batch that expired in an outage longer than the request timeout), offsets
           included, so the records would be skipped;
        4. commit the transaction;
        5. only now let the pipeline's state keep the transaction's changes, and count.

        Any Kafka error rewinds the partition to its last commit (`rewind`), which finds out
        whether another instance has taken it over. That includes being fenced: the
        coordinator also fences a producer whose transaction outlived the transaction timeout
        (a long outage), and then this instance still owns the partition and carries on.

        Steps 1-4 get `commit_deadline_s` (the transaction timeout): past it the coordinator
        has ended the transaction one way or the other, yet aiokafka may keep retrying a
        transactional request to a broker that came back without ever answering the caller
        (seen after a broker's kill -9: the commit hung, and with it the group's rebalance).
        A commit that outlives it rewinds like any other failure, and the rewind finds out
        whether it committed after all.
        """
        started = time.perf_counter()
        producer, writer = self.producer, self.writer
        try:
            async with asyncio.timeout(self._commit_deadline_s):
                await producer.begin_transaction()  # 1.
                await writer.send()
                writer.deliveries += await self.changelog.send(
                    producer,
                    self.pipeline.pending_state(),
                    raw_from=self.committed_offset,
                    raw_next=self.next_offset,
                    timestamp_ms=self.last_timestamp_ms,
                )
                await producer.send_offsets_to_transaction(  # 2.
                    {self.tp: self.next_offset}, self._group_id
                )
                await writer.delivered()  # 3.
                await producer.commit_transaction()  # 4.
        except KafkaError as error:
            await self.rewind("the transaction failed", error)
            return
        except TimeoutError:
            timeout = KafkaTimeoutError(f"no end after {self._commit_deadline_s:g} s")
            await self.rewind("the transaction outlived the transaction timeout", timeout)
            return
        self._kept(self._tally(), time.perf_counter() - started)  # 5.

    async def rewind(self, why: str, error: KafkaError) -> None:
        """Abandon the open transaction and go back to the last commit:

        1. forget what was collected for Kafka;
        2. if the committed offset moved, another instance processed the partition meanwhile:
           stop (PartitionLost) rather than fence it and write its work again;
        3. take the transactional id with a new producer: this ends our open transaction
           (the old producer may hold batches the broker would otherwise still take);
        4. check 2 again, now that every transaction of the previous epoch has ended: an
           owner that committed in between is fenced now, but its work must not be written
           twice either;
        5. if our own transaction committed after all (its answer was lost: a commit given up
           at its deadline while the coordinator completed it), keep the state's changes, as
           a commit does; else forget them and seek back to the committed offset, and the
           records come again.

        The offsets our transaction carried (`next_offset`) are ours in both checks: seeing
        them committed is our transaction's late success, not another instance's work (the
        transactional id is the partition's, so no other owner can commit the same range).
        """
        log.warning(
            "%s; rewinding the partition to its last commit",
            why,
            extra={"fields": {"partition": self.tp.partition, "error": repr(error)}},
        )
        tally = self._tally()
        self.writer.clear()  # 1.
        try:
            await self._still_ours(fenced=False)  # 2.
            abandoned = self.producer
            self.writer.clear(await self._clients.fenced_producer(self.tp))  # 3.
            await stopped(abandoned, patience_s=5)
            committed = await self._still_ours(fenced=True)  # 4.
        except BaseException:
            self._abort()
            raise
        if committed == self.next_offset:  # 5.
            self._kept(tally)
            log.info(
                "the transaction had committed after all",
                extra={"fields": {"partition": self.tp.partition, "offset": committed}},
            )
            return
        self._abort()
        self.next_offset = self.committed_offset
        self._consumer.seek(self.tp, self.committed_offset)

    def _abort(self) -> None:
        """The state forgets its changes since the last commit."""
        self._metrics.transactions.labels("aborted").inc()
        self.pipeline.abort()
        self.uncommitted = 0

    async def close(self) -> None:
        await stopped(self.producer)

    async def _still_ours(self, *, fenced: bool) -> int:
        """The committed offset, unless it says another instance processed the partition
        (PartitionLost) or the partition was revoked (PartitionRevoked).

        Ours are our last commit and the offsets of the transaction being rewound. Before the
        id is taken again (`fenced` False) the offset may also read lower than our last
        commit: a transaction's offsets show only once the coordinator has written its
        markers, which it does after answering the commit. Once the id is taken again, every
        transaction of the previous epoch has ended, so the offset must come to be one of
        ours; yet right after a broker restart the group can still show the offset before our
        last commit for a moment (seen with Kafka 4.4 on one broker). No other instance can
        move the offset backwards while this one is a member (a reset needs an empty group),
        so a lower offset is read again until ours shows, for `LAGGING_OFFSET_PATIENCE_S`.
        """
        if self.tp not in self._consumer.assignment():
            raise PartitionRevoked(f"partition {self.tp.partition} was revoked")
        committed = await self._committed()
        if fenced and committed < self.committed_offset:
            committed = await self._caught_up(committed)
        ours = committed in (self.committed_offset, self.next_offset)
        if not ours and (fenced or committed > self.committed_offset):
            raise PartitionLost(
                f"partition {self.tp.partition} was processed by another instance: committed "
                f"offset {committed}, this instance's last commit {self.committed_offset}"
            )
        return committed

    async def _caught_up(self, committed: int) -> int:
        """The committed offset read again until it is no longer below our last commit, or
        until `LAGGING_OFFSET_PATIENCE_S` ran out; logged either way, as it is rare."""
        started = time.monotonic()
        while committed < self.committed_offset:
            if time.monotonic() - started > LAGGING_OFFSET_PATIENCE_S:
                break
            await asyncio.sleep(RETRY_PAUSE_S / 10)
            committed = await self._committed()
        log.warning(
            "the committed offset lagged behind this instance's last commit",
            extra={
                "fields": {
                    "partition": self.tp.partition,
                    "offset": committed,
                    "last_commit": self.committed_offset,
                    "waited_s": round(time.monotonic() - started, 3),
                }
            },
        )
        return committed

    async def _committed(self) -> int:
        """The group's committed offset for the partition, retried while Kafka is away.

        Right after a transaction ended, the coordinator may report no committed offset at
        all until the transaction's markers are written (a pending transactional commit is
        not visible): a missing offset is read again, until the one the partition had since
        it was opened shows, or another one does.
        """
        deadline = time.monotonic() + LAGGING_OFFSET_PATIENCE_S
        while True:
            try:
                committed = await self._consumer.committed(self.tp)
            except KafkaError as error:
                log.debug("reading the committed offset failed: %r; retrying", error)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if committed is not None:
                return int(committed)
            beginning: int = (await self._consumer.beginning_offsets([self.tp]))[self.tp]
            if self.committed_offset <= beginning or time.monotonic() > deadline:
                return beginning
            await asyncio.sleep(RETRY_PAUSE_S / 10)

    def _tally(self) -> tuple[int, int, Counter[str]]:
        """What the open transaction carries, counted: events, duplicates, dead letters."""
        writer = self.writer
        return writer.emitted, writer.duplicates, writer.dead_letters

    def _kept(self, tally: tuple[int, int, Counter[str]], seconds: float | None = None) -> None:
        """The transaction committed: the state keeps its changes, and it is counted."""
        self.pipeline.commit()
        self.committed_offset = self.next_offset
        self.uncommitted = 0
        metrics = self._metrics
        if seconds is not None:
            metrics.transaction_seconds.observe(seconds)
        metrics.transactions.labels("committed").inc()
        emitted, duplicates, dead_letters = tally
        metrics.emitted.inc(emitted)
        metrics.duplicates.inc(duplicates)
        for reason, count in dead_letters.items():
            metrics.dead_letters.labels(reason).inc(count)
        self.writer.clear()
        self.report_state()

    def report_state(self) -> None:
        """Set the partition's gauges: lag, and what its state holds."""
        metrics, pipeline = self._metrics, self.pipeline
        label = str(self.tp.partition)
        highwater = self._consumer.highwater(self.tp)
        if highwater is not None:
            metrics.lag.labels(label).set(max(0, highwater - self.committed_offset))
        window = pipeline.window
        metrics.dedupe_keys.labels(label).set(len(window))
        metrics.dedupe_bytes.labels(label).set(window.approx_bytes())
        metrics.dedupe_evicted_early.labels(label).set(window.evicted_early)
        metrics.latency_waiting.labels(label).set(len(pipeline.latency))
