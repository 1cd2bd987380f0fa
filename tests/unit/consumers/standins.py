"""Stand-in Kafka clients that record what the processor asks of them, for unit tests that
drive a partition's transactions or the whole loop (the runtime takes its clients from a
factory, as arroyo's StreamProcessor takes its consumer). They script failures and stalls on
cue; tests/integration runs the same code against a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from common import raw_record

TP = TopicPartition("raw", 0)
NOW_MS = 1_800_000_000_000


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int


def records(bodies: list[bytes], first_offset: int = 0, partition: int = 0) -> list[Record]:
    return [
        Record(
            "raw",
            partition,
            first_offset + n,
            None,
            body,
            [(raw_record.RECEIVED_AT, str(NOW_MS + n).encode())],
            NOW_MS + n,
        )
        for n, body in enumerate(bodies)
    ]


class Batch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: Any) -> bool:
        self.records.append(value)
        return True

    def close(self) -> None:
        pass


class Producer:
    """Records the calls of one transactional producer; a step can be made to fail."""

    def __init__(
        self,
        journal: list[str],
        fail: dict[str, Exception] | None = None,
        hold: dict[str, asyncio.Event] | None = None,
    ) -> None:
        self.journal = journal
        self.fail = fail or {}
        self.hold = hold or {}  # a step that waits until its event is set
        self.stopped = False

    async def _step(self, name: str) -> None:
        held = self.hold.get(name)
        if held is not None:
            await held.wait()
        self.journal.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> Batch:
        return Batch()

    async def begin_transaction(self) -> None:
        await self._step("begin")

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        await self._step("send_batch")
        return self._written()

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        await self._step(f"send {topic}")
        return self._written()

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        [(_, offset)] = offsets.items()
        await self._step(f"offsets {offset}")

    async def commit_transaction(self) -> None:
        await self._step("commit")

    async def stop(self) -> None:
        self.stopped = True

    def _written(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if "delivery" in self.fail:
            future.set_exception(self.fail.pop("delivery"))
        else:
            future.set_result(None)
        return future


class Consumer:
    def __init__(self, committed: int) -> None:
        self.committed_offset = committed
        self.lagging: list[int] = []  # what the next reads say before `committed_offset` does
        self.owned = {TP}
        self.seeks: list[int] = []

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.lagging.pop(0) if self.lagging else self.committed_offset

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


class Clients:
    """Hands out a new producer when the partition's id is taken again; `meanwhile` runs
    first, as whatever else happens on the cluster while the id is being taken."""

    def __init__(self, journal: list[str], meanwhile: Callable[[], None] = lambda: None) -> None:
        self.journal = journal
        self.meanwhile = meanwhile
        self.producers: list[Producer] = []

    async def fenced_producer(self, tp: TopicPartition) -> Producer:
        self.meanwhile()
        self.journal.append("fence")
        producer = Producer(self.journal)
        self.producers.append(producer)
        return producer


class GroupConsumer(Consumer):
    """The group consumer as the loop sees it: the test queues fetched batches; paused
    partitions' records stay queued until resumed, as Kafka's fetcher does."""

    def __init__(self, partitions: int) -> None:
        super().__init__(committed=0)
        self.owned = {TopicPartition("raw", p) for p in range(partitions)}
        self.fetched: list[dict[TopicPartition, list[Record]]] = []
        self.paused: set[TopicPartition] = set()
        self.arrived = asyncio.Event()
        self.waits: list[int] = []  # the timeout of every getmany

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    def feed(self, tp: TopicPartition, batch: list[Record]) -> None:
        self.fetched.append({tp: batch})
        self.arrived.set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        self.waits.append(timeout_ms)
        ready = [batch for batch in self.fetched if not set(batch) & self.paused]
        if not ready:
            self.arrived.clear()
            try:
                async with asyncio.timeout(timeout_ms / 1000):
                    await self.arrived.wait()
            except TimeoutError:
                return {}
            return {}
        self.fetched.remove(ready[0])
        return ready[0]

    def pause(self, tp: TopicPartition) -> None:
        self._assigned(tp)
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self._assigned(tp)
        self.paused.discard(tp)
        self.arrived.set()

    def _assigned(self, tp: TopicPartition) -> None:
        if tp not in self.owned:  # as aiokafka's subscription state refuses it
            raise IllegalStateError(f"No current assignment for partition {tp}")

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.owned}

    async def stop(self) -> None:
        pass


class Reader:
    """A restore reader over empty raw and state topics."""

    async def start(self) -> None:
        pass

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def stop(self) -> None:
        pass


class LoopClients:
    """The whole factory for the loop: one group consumer, a scripted producer per partition."""

    def __init__(self, consumer: GroupConsumer, producers: dict[int, Producer]) -> None:
        self.consumer = consumer
        self.producers = producers

    def group_consumer(self) -> GroupConsumer:
        return self.consumer

    async def fenced_producer(self, tp: TopicPartition) -> Producer:
        return self.producers[tp.partition]

    def reader(self, name: str) -> Reader:
        return Reader()
