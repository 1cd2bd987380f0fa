"""The processor's baseline: a bare transactional consume-(dedupe-)produce loop.

In process (B3) or as a process of its own (B4: `python -m bench.bare_loop`, reading
BENCH_BARE_RAW, BENCH_BARE_OUT, BENCH_BARE_GROUP and the processor's settings from the
environment; SIGTERM stops it after committing what is open).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from hashlib import blake2b

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from consumers.settings import ProcessorSettings


@dataclass
class _Transaction:
    producer: AIOKafkaProducer
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    open: bool = False


class BareLoop:
    """Consume, optionally dedupe on the raw value, pass on, commit offsets in the transaction.

    The runtime's loop without its pipeline: same consumer and producer options, same commit
    policy, transactions of all partitions committed concurrently. With `per_partition` each
    raw partition has its own transactional producer (the runtime's fencing scheme); without,
    one producer's transaction carries every partition. It copies the runtime's loop instead of
    reusing it because a baseline must stay put while the runtime it measures changes.
    """

    def __init__(
        self,
        bootstrap: str,
        raw: str,
        out: str,
        group: str,
        *,
        dedupe: bool,
        per_partition: bool,
        commit_interval_ms: int,
        commit_max_records: int,
    ) -> None:
        self._bootstrap, self._raw, self._out, self._group = bootstrap, raw, out, group
        self._dedupe, self._per_partition = dedupe, per_partition
        self._interval_s, self._max_records = commit_interval_ms / 1000, commit_max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._transactions: dict[int, _Transaction] = {}
        self._seen: dict[int, set[bytes]] = {}

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._raw])

    async def _transaction(self, tp: TopicPartition) -> _Transaction:
        key = tp.partition if self._per_partition else -1
        transaction = self._transactions.get(key)
        if transaction is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                transactional_id=f"{self._group}.{key}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=512 * 1024,  # as the processor's producers
            )
            await producer.start()
            transaction = self._transactions[key] = _Transaction(producer)
        if not transaction.open:
            await transaction.producer.begin_transaction()
            transaction.open = True
        return transaction

    async def run(self, stop: asyncio.Event) -> None:
        next_commit = time.monotonic() + self._interval_s
        uncommitted = 0
        out, dedupe = self._out, self._dedupe
        try:
            while not stop.is_set():
                wait_ms = max(0, int((next_commit - time.monotonic()) * 1000))
                batches = await self._consumer.getmany(
                    timeout_ms=wait_ms, max_records=self._max_records
                )
                for tp, records in batches.items():
                    transaction = await self._transaction(tp)
                    send = transaction.producer.send
                    seen = self._seen.setdefault(tp.partition, set())
                    for record in records:
                        if dedupe:
                            digest = blake2b(record.value, digest_size=16).digest()
                            if digest in seen:
                                continue
                            seen.add(digest)
                        await send(out, record.value, key=record.key)
                    transaction.offsets[tp] = records[-1].offset + 1
                    uncommitted += len(records)
                if uncommitted >= self._max_records or time.monotonic() >= next_commit:
                    await self._commit_all()
                    uncommitted = 0
                    next_commit = time.monotonic() + self._interval_s
        finally:
            await self._commit_all()
            for transaction in self._transactions.values():
                await transaction.producer.stop()
            await self._consumer.stop()

    async def _commit_all(self) -> None:
        await asyncio.gather(*(self._commit(t) for t in self._transactions.values() if t.open))

    async def _commit(self, transaction: _Transaction) -> None:
        await transaction.producer.send_offsets_to_transaction(transaction.offsets, self._group)
        await transaction.producer.commit_transaction()
        transaction.offsets = {}
        transaction.open = False


async def serve() -> None:
    """The dedupe loop with a transactional producer per partition, at the processor's commit
    policy from the same environment, until SIGTERM or SIGINT."""
    settings = ProcessorSettings.from_environ(os.environ)
    loop = BareLoop(
        settings.kafka.bootstrap_servers,
        os.environ["BENCH_BARE_RAW"],
        os.environ["BENCH_BARE_OUT"],
        os.environ["BENCH_BARE_GROUP"],
        dedupe=True,
        per_partition=True,
        commit_interval_ms=settings.commit_interval_ms,
        commit_max_records=settings.commit_max_records,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await loop.start()
    await loop.run(stop)


if __name__ == "__main__":
    uvloop.run(serve())
