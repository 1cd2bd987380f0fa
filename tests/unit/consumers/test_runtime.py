"""The processor's loop, driven with stand-in clients: one partition's trouble is its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.instruments import ProcessorMetrics
from consumers.runtime import ProcessorRuntime
from consumers.settings import ProcessorSettings
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.traffic import delivery_reports
from tests.unit.consumers.standins import GroupConsumer, LoopClients, Producer, Reader, records

SETTINGS = ProcessorSettings.from_environ(
    {
        "KAFKA_BOOTSTRAP_SERVERS": "unused:9092",
        "PROCESSOR_COMMIT_INTERVAL_MS": "10",
        "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
    }
)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll stand-in state that the loop changes as it runs (between two of its steps)."""
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not within the time allowed")


async def test_a_partition_whose_commit_hangs_holds_up_no_other_partition() -> None:
    """Issue 12, 3.6: a partition whose brokers stopped answering keeps its commit waiting,
    while every other partition goes on processing and committing; it catches up once its
    brokers answer again."""
    stuck, flowing = TopicPartition("raw", 0), TopicPartition("raw", 1)
    consumer = GroupConsumer(partitions=2)
    answer = asyncio.Event()
    journals: dict[int, list[str]] = {0: [], 1: []}
    producers = {
        0: Producer(journals[0], hold={"commit": answer}),
        1: Producer(journals[1]),
    }
    runtime = ProcessorRuntime(
        SETTINGS,
        ProcessorMetrics(CollectorRegistry()),
        LoopClients(consumer, producers),
    )
    await runtime.on_partitions_assigned([stuck, flowing])
    await until(lambda: runtime.assigned == [0, 1])
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    bodies = delivery_reports(30)
    consumer.feed(stuck, records(bodies[:10], partition=0))
    for n in range(3):
        await until(lambda: stuck in consumer.paused)  # its commit began, and hangs
        consumer.feed(flowing, records(bodies[10 * n : 10 * n + 10], 10 * n, partition=1))
        await until(lambda: journals[1].count("commit") == n + 1)  # noqa: B023 - awaited here
    assert "commit" not in journals[0]
    # Waiting on a commit is no reason to poll without waiting: the loop does not spin.
    assert consumer.waits.count(0) < 10
    consumer.feed(stuck, records(bodies[10:20], 10, partition=0))  # waits while paused
    answer.set()
    await until(lambda: journals[0].count("commit") == 2)
    stop.set()
    await running
    assert journals[0] == [
        "begin", "send_batch", "send postbacks.processor-state", "offsets 10", "commit",
        "begin", "send_batch", "send postbacks.processor-state", "offsets 20", "commit",
    ]  # fmt: skip


async def test_a_partition_gone_from_the_assignment_before_its_revocation_still_commits() -> None:
    """A processor frozen past its session timeout wakes with partitions the group already
    took away, before the revocation callback has run: its due commit must not crash the
    loop by pausing a partition the consumer no longer has (the zombie drill saw exit 1,
    IllegalStateError, instead of the fenced exit); the commit itself finds out."""
    tp = TopicPartition("raw", 0)
    consumer = GroupConsumer(partitions=1)
    journal: list[str] = []
    runtime = ProcessorRuntime(
        SETTINGS,
        ProcessorMetrics(CollectorRegistry()),
        LoopClients(consumer, {0: Producer(journal)}),
    )
    await runtime.on_partitions_assigned([tp])
    await until(lambda: runtime.assigned == [0])
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    consumer.feed(tp, records(delivery_reports(5), partition=0))
    consumer.owned = set()  # the group moved on while this instance was frozen
    await until(lambda: "commit" in journal or running.done())
    stop.set()
    await running
    assert journal.count("commit") == 1


async def test_a_partition_assigned_just_before_kafka_went_away_opens_once_it_is_back() -> None:
    """The simulator's broker-restart test saw the processor exit 1: a partition's restore
    could not reach the broker ("Unable to bootstrap") and the open failed for good. A
    failure Kafka calls retriable is tried again, the partition paused meanwhile."""
    tp = TopicPartition("raw", 0)
    consumer = GroupConsumer(partitions=1)
    journal: list[str] = []

    class BrokerAwayOnce(LoopClients):
        readers = 0

        def reader(self, name: str) -> Reader:
            self.readers += 1
            reader = Reader()
            if self.readers == 1:

                async def refused() -> None:
                    raise KafkaConnectionError("Unable to bootstrap")

                reader.start = refused  # type: ignore[method-assign]
            return reader

    clients = BrokerAwayOnce(consumer, {0: Producer(journal)})
    runtime = ProcessorRuntime(SETTINGS, ProcessorMetrics(CollectorRegistry()), clients)
    await runtime.on_partitions_assigned([tp])
    await until(lambda: runtime.assigned == [0])
    assert clients.readers == 2
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    consumer.feed(tp, records(delivery_reports(5), partition=0))
    await until(lambda: "commit" in journal or running.done())
    stop.set()
    await running  # raises what failed the loop, if anything did
    assert journal.count("commit") == 1
