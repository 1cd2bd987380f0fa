"""A partition's transactions, driven with stand-in clients: the commit protocol's order, and
what a rewind does when the partition may have moved meanwhile.

The clients here are scripted stand-ins (the loop takes its clients from a factory, as
arroyo's StreamProcessor takes its consumer); tests/integration/consumers runs the same code
against a real broker.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaError, ProducerFenced
from prometheus_client import CollectorRegistry

from consumers.changelog import Changelog
from consumers.instruments import ProcessorMetrics
from consumers.partition import OwnedPartition, PartitionLost, PartitionRevoked
from consumers.partitioning import EventPartitioner
from consumers.processor.pipeline import PartitionPipeline
from consumers.settings import ProcessorSettings
from consumers.writer import DispositionWriter
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.traffic import delivery_reports
from tests.unit.consumers.standins import TP, Clients, Consumer, Producer, records

SETTINGS = ProcessorSettings.from_environ(
    {"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY}
)


def owned_partition(
    producer: Producer,
    consumer: Consumer,
    clients: Clients,
    committed: int = 0,
    commit_deadline_s: float = 60.0,
    registry: CollectorRegistry | None = None,
) -> OwnedPartition:
    pipeline = PartitionPipeline.from_settings(SETTINGS, "raw", 0)
    writer = DispositionWriter(
        producer,
        events_topic="events",
        dlq_topic="dlq",
        partitioner=EventPartitioner(0, 1, 1),
    )
    return OwnedPartition(
        TP,
        pipeline=pipeline,
        writer=writer,
        changelog=Changelog("state", 0, b"keys"),
        committed_offset=committed,
        consumer=consumer,
        clients=clients,  # type: ignore[arg-type]  # a stand-in
        group_id="group",
        metrics=ProcessorMetrics(registry or CollectorRegistry()),
        commit_deadline_s=commit_deadline_s,
    )


async def test_a_commit_writes_then_offsets_then_waits_for_every_write_then_commits() -> None:
    """The state keeps a batch only after Kafka committed the transaction that carried it, and
    the offsets only ever commit with the events they produced."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    partition = owned_partition(Producer(journal), consumer, Clients(journal))
    bodies = delivery_reports(5)
    partition.process(records(bodies))
    assert journal == []  # processing does no I/O
    assert len(partition.pipeline.window) == 5  # pending in the state...
    await partition.commit()
    assert journal == ["begin", "send_batch", "send state", "offsets 5", "commit"]
    assert partition.committed_offset == 5
    partition.process(records(bodies, first_offset=5))  # ...and kept: retries are duplicates
    assert partition.writer.duplicates == 5


async def test_a_write_kafka_failed_is_never_committed_over() -> None:
    """A batch that failed for good (an outage past the request timeout) aborts the whole
    transaction: no commit, the state forgets the batch, and the records are read again."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    producer = Producer(journal, fail={"delivery": KafkaError("batch expired")})
    clients = Clients(journal)
    partition = owned_partition(producer, consumer, clients)
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert "commit" not in journal[: journal.index("fence")]
    assert len(partition.pipeline.window) == 0
    assert consumer.seeks == [0]
    assert partition.producer is clients.producers[0]
    assert producer.stopped


async def test_a_rewind_stops_when_another_instance_processed_the_partition_meanwhile() -> None:
    """Issue 12, 3.5: after a failed transaction, taking the transactional id again must not
    be followed by writing again what another instance committed while this one was cut off:
    the committed offset moved, so the partition is lost, not rewound."""
    journal: list[str] = []
    consumer = Consumer(committed=0)

    def another_instance_commits() -> None:
        consumer.committed_offset = 42

    producer = Producer(journal, fail={"commit": KafkaError("request timed out")})
    partition = owned_partition(producer, consumer, Clients(journal, another_instance_commits))
    partition.process(records(delivery_reports(5)))
    with pytest.raises(PartitionLost, match="committed offset 42"):
        await partition.commit()
    assert consumer.seeks == []  # nothing is read (or written) again


async def test_a_rewind_does_not_fence_an_owner_that_already_committed() -> None:
    """When the move shows before the id is taken again, the new owner is left alone."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    producer = Producer(journal, fail={"commit": KafkaError("request timed out")})
    partition = owned_partition(producer, consumer, Clients(journal))
    partition.process(records(delivery_reports(5)))
    consumer.committed_offset = 42
    with pytest.raises(PartitionLost):
        await partition.commit()
    assert "fence" not in journal


async def committed_then_failing(consumer: Consumer) -> tuple[OwnedPartition, Clients]:
    """A partition that committed records 0-4 and holds 5-9 in a transaction whose commit
    fails: the test sets what the group shows, and calls `commit` to rewind."""
    journal: list[str] = []
    producer = Producer(journal)
    clients = Clients(journal)
    partition = owned_partition(producer, consumer, clients)
    partition.process(records(delivery_reports(5)))
    await partition.commit()  # committed at 5, as far as this instance knows
    producer.fail["commit"] = KafkaError("request timed out")
    partition.process(records(delivery_reports(5, seed=2), first_offset=5))
    return partition, clients


async def test_our_own_last_commit_not_visible_yet_is_no_reason_to_stop() -> None:
    """Right after a commit the group can still report the offset before it (the commit's
    markers are written after the commit was answered): before the id is taken again, a lower
    offset is ours, pending, and the rewind carries on; taking the id completes it."""
    consumer = Consumer(committed=0)
    partition, clients = await committed_then_failing(consumer)
    consumer.committed_offset = 0  # ...but the group still says 0: markers pending

    def markers_written() -> None:
        consumer.committed_offset = 5

    clients.meanwhile = markers_written
    await partition.commit()
    assert consumer.seeks == [5]
    assert partition.producer is clients.producers[0]


async def test_our_last_commit_read_lower_after_the_id_is_taken_again_is_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Right after a broker restart the group can show the offset before our last commit
    even once the id is taken again (seen in CI: "committed offset 500, this instance's last
    commit 1000"). Nobody else can move the offset backwards, so the rewind reads it again
    until ours shows, and carries on rather than stop the processor."""
    consumer = Consumer(committed=0)
    partition, clients = await committed_then_failing(consumer)
    consumer.committed_offset = 5

    def broker_restarted() -> None:
        consumer.lagging = [0, 0, 0]  # the id is taken: what the group shows for a moment

    clients.meanwhile = broker_restarted
    await partition.commit()
    assert consumer.lagging == []
    assert consumer.seeks == [5]
    assert partition.producer is clients.producers[0]
    said = [r.getMessage() for r in caplog.records if "lagged" in r.getMessage()]
    assert said == ["the committed offset lagged behind this instance's last commit"]


async def test_an_offset_that_stays_below_our_last_commit_stops_the_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the patience, what the group says wins: the partition is lost, not written again
    from an offset this instance did not commit."""
    monkeypatch.setattr("consumers.partition.LAGGING_OFFSET_PATIENCE_S", 0.05)
    consumer = Consumer(committed=0)
    partition, _ = await committed_then_failing(consumer)
    consumer.committed_offset = 3
    with pytest.raises(PartitionLost, match="committed offset 3"):
        await partition.commit()
    assert consumer.seeks == []


async def test_fenced_after_an_outage_that_outlived_the_transaction_timeout_carries_on() -> None:
    """The coordinator fences a transaction that stayed open past its timeout; when nobody
    else processed the partition, it rewinds and goes on, with no restart."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    producer = Producer(journal, fail={"commit": ProducerFenced()})
    clients = Clients(journal)
    partition = owned_partition(producer, consumer, clients)
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert consumer.seeks == [0]
    assert partition.producer is clients.producers[0]
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert journal[-1] == "commit"
    assert partition.committed_offset == 5


async def test_a_commit_that_never_ends_rewinds_at_the_transaction_timeout() -> None:
    """A transactional request the client retries forever (a broker back from kill -9) does
    not hold the partition, and with it the group's rebalance: past the transaction timeout,
    which the coordinator has aborted it by, the partition rewinds and goes on."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    producer = Producer(journal, hold={"commit": asyncio.Event()})  # never set
    clients = Clients(journal)
    partition = owned_partition(producer, consumer, clients, commit_deadline_s=0.05)
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert "commit" not in journal
    assert (consumer.seeks, len(partition.pipeline.window)) == ([0], 0)
    assert partition.producer is clients.producers[0]
    assert producer.stopped
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert journal[-1] == "commit"
    assert partition.committed_offset == 5


async def test_a_commit_given_up_that_the_coordinator_completed_counts_as_committed() -> None:
    """A commit whose answer never came may still have committed (the coordinator completed
    it once the cluster was back): the rewind finds our own offsets committed, keeps the
    batch in the state and carries on from there, rather than take our own transaction for
    another instance's work and stop, or process the batch a second time."""
    journal: list[str] = []
    consumer = Consumer(committed=0)

    def the_coordinator_completes_our_commit() -> None:
        consumer.committed_offset = 5

    producer = Producer(journal, hold={"commit": asyncio.Event()})  # the answer never comes
    clients = Clients(journal, the_coordinator_completes_our_commit)
    registry = CollectorRegistry()
    partition = owned_partition(
        producer, consumer, clients, commit_deadline_s=0.05, registry=registry
    )
    partition.process(records(delivery_reports(5)))
    await partition.commit()
    assert (partition.committed_offset, consumer.seeks) == (5, [])
    counted = {
        result: registry.get_sample_value(
            "postback_processor_transactions_total", {"result": result}
        )
        for result in ("committed", "aborted")
    }
    assert counted == {"committed": 1, "aborted": None}
    assert registry.get_sample_value("postback_processor_events_emitted_total") == 5
    partition.process(records(delivery_reports(5), first_offset=5))  # retries of the batch
    assert partition.writer.duplicates == 5


async def test_a_partition_revoked_during_a_rewind_is_left_to_the_revocation() -> None:
    """A rewind that finds the partition revoked does nothing more: the next owner takes it."""
    journal: list[str] = []
    consumer = Consumer(committed=0)
    producer = Producer(journal, fail={"commit": KafkaError("request timed out")})
    partition = owned_partition(producer, consumer, Clients(journal))
    partition.process(records(delivery_reports(5)))
    consumer.owned = set()
    with pytest.raises(PartitionRevoked):
        await partition.commit()
    assert "fence" not in journal
