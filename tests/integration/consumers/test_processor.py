"""The processor against a real broker: one event per notification, dead letters, state."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from common.partitioning import default_partition
from consumers import dlq
from consumers.clients import KafkaClients
from testkit.kafka_tools import produce, read_all_committed
from testkit.traffic import (
    as_raw,
    delivery_reports,
    expected_event_ids,
    hours_ago_ms,
    realistic_mix,
)
from tests.integration.consumers.conftest import running_processor, wait_caught_up

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000


async def test_each_notification_becomes_exactly_one_event_and_bad_bodies_dead_letters(
    processor_env: dict[str, str],
) -> None:
    """Retries are absorbed, every kind parses, and what cannot parse is kept in the DLQ."""
    bootstrap = processor_env["KAFKA_BOOTSTRAP_SERVERS"]
    mix = realistic_mix(400)
    async with running_processor(processor_env) as (_, registry):
        await produce(
            bootstrap, processor_env["KAFKA_TOPIC_RAW"], as_raw(mix.bodies, hours_ago_ms(1))
        )
        await wait_caught_up(processor_env)
    events = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    letters = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_DLQ"])

    ids = Counter(orjson.loads(record.value)["event_id"] for record in events)
    assert set(ids) == mix.event_ids
    assert max(ids.values()) == 1
    assert sorted(record.value for record in letters) == sorted(mix.malformed)
    for record in letters:
        headers = dict(record.headers)
        assert headers[dlq.REASON]
        assert headers[dlq.SOURCE_TOPIC] == processor_env["KAFKA_TOPIC_RAW"].encode()
        assert headers["request-id"].startswith(b"req-")  # the edge's headers are kept
    partitions = int(processor_env["KAFKA_TOPIC_PARTITIONS"])
    for record in events:
        event = orjson.loads(record.value)
        if event["tracking_id"]:
            assert record.key == event["tracking_id"].encode()
        # Where any producer's default partitioner puts the key, so a message stays in order.
        assert record.partition == default_partition(record.key, partitions)
    dropped = registry.get_sample_value("postback_processor_duplicates_dropped_total")
    assert dropped == len(mix.bodies) - len(events) - len(letters)


async def test_duplicates_inside_the_window_are_dropped_and_outside_it_kept(
    processor_env: dict[str, str],
) -> None:
    """The window is measured on the edge's clock: a retry 10 min later is a duplicate, a
    repeat 3 h later (beyond a 31 min window) is a new notification."""
    env = {**processor_env, "DEDUPE_WINDOW_SECONDS": "1860"}
    bootstrap, raw = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"]
    (body,) = delivery_reports(1)
    t0 = hours_ago_ms(4)
    async with running_processor(env):
        await produce(bootstrap, raw, as_raw([body], t0) + as_raw([body], t0 + 600_000))
        await produce(bootstrap, raw, as_raw([body], t0 + 3 * HOUR_MS))
        await wait_caught_up(env)
    events = await read_all_committed(bootstrap, env["KAFKA_TOPIC_EVENTS"])
    received = sorted(orjson.loads(record.value)["lineage"]["offset"] for record in events)
    assert received == [0, 2], "the original and the repeat 3 h later, not the 10 min retry"


@pytest.mark.parametrize("source", ["state", "raw"])
async def test_dedupe_state_survives_a_restart(processor_env: dict[str, str], source: str) -> None:
    """After a restart the state is rebuilt, from the state topic the first run wrote, or,
    when that cannot serve (here: a new, empty state topic, as on the first start of this
    version), from the raw topic: either way retries of notifications processed before the
    restart are still recognised."""
    bootstrap, raw = processor_env["KAFKA_BOOTSTRAP_SERVERS"], processor_env["KAFKA_TOPIC_RAW"]
    before, after = delivery_reports(300, seed=1), delivery_reports(100, seed=2)
    t0 = int(time.time() * 1000) - HOUR_MS
    async with running_processor(processor_env):
        await produce(bootstrap, raw, as_raw(before, t0))
        await wait_caught_up(processor_env)
    restarted = processor_env
    if source == "raw":
        restarted = {**processor_env, "KAFKA_TOPIC_STATE": processor_env["KAFKA_TOPIC_STATE"] + "2"}
    async with running_processor(restarted) as (_, registry):
        await produce(bootstrap, raw, as_raw(before[::3] + after, t0 + 600_000))
        await wait_caught_up(processor_env)
        opened = registry.get_sample_value(
            "postback_processor_partition_opens_total", {"state": source}
        )
        assert opened == int(processor_env["KAFKA_TOPIC_PARTITIONS"])
        assert registry.get_sample_value("postback_processor_duplicates_dropped_total") == len(
            before[::3]
        )
    events = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    ids = Counter(orjson.loads(record.value)["event_id"] for record in events)
    assert set(ids) == expected_event_ids(before + after)
    assert max(ids.values()) == 1


async def test_a_changed_identity_rebuilds_from_raw_and_still_recognises_retries(
    processor_env: dict[str, str],
) -> None:
    """State keyed by one dedupe identity cannot recognise a retry under another: after
    DEDUPE_IDENTITY_FIELDS changes (or a release changes the parser), the state topic's keys
    are refused and the state is rebuilt from the raw topic with the new identity, so retries
    of notifications processed before the change are still dropped, not emitted again under a
    new event id."""
    bootstrap, raw = processor_env["KAFKA_BOOTSTRAP_SERVERS"], processor_env["KAFKA_TOPIC_RAW"]
    before, after = delivery_reports(300, seed=5), delivery_reports(100, seed=6)
    t0 = int(time.time() * 1000) - HOUR_MS
    async with running_processor(processor_env):
        await produce(bootstrap, raw, as_raw(before, t0))
        await wait_caught_up(processor_env)
    narrower = {**processor_env, "DEDUPE_IDENTITY_FIELDS": "origin,tracking-id,code,status"}
    async with running_processor(narrower) as (_, registry):
        await produce(bootstrap, raw, as_raw(before[::3] + after, t0 + 600_000))
        await wait_caught_up(narrower)
        opened = registry.get_sample_value(
            "postback_processor_partition_opens_total", {"state": "raw"}
        )
        assert opened == int(processor_env["KAFKA_TOPIC_PARTITIONS"])
        dropped = registry.get_sample_value("postback_processor_duplicates_dropped_total")
    events = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    assert dropped == len(before[::3])
    assert len(events) == len(before) + len(after)
    # The rebuild wrote a snapshot with the new keys: the next start uses the state topic,
    # the older records of the other identity before it notwithstanding.
    partitions = int(processor_env["KAFKA_TOPIC_PARTITIONS"])
    async with running_processor(narrower) as (_, registry):
        opens = {"state": 0.0, "raw": 0.0}
        deadline = time.monotonic() + 60
        while sum(opens.values()) < partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for source in opens:
                opens[source] = (
                    registry.get_sample_value(
                        "postback_processor_partition_opens_total", {"state": source}
                    )
                    or 0.0
                )
    assert opens == {"state": partitions, "raw": 0}


async def test_delivery_latency_is_joined_in_either_arrival_order(
    processor_env: dict[str, str],
) -> None:
    """Sent then final: the final event carries the latency. Final first (the sent was
    retried later): the late sent event carries it, flagged."""
    bootstrap, raw = processor_env["KAFKA_BOOTSTRAP_SERVERS"], processor_env["KAFKA_TOPIC_RAW"]
    in_order = delivery_reports(2, seed=3)  # sent, final of one message
    reversed_pair = delivery_reports(2, seed=4)[::-1]  # final, then sent
    async with running_processor(processor_env):
        await produce(bootstrap, raw, as_raw(in_order + reversed_pair, hours_ago_ms(1)))
        await wait_caught_up(processor_env)
    events = [
        orjson.loads(r.value)
        for r in await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    ]
    by_id = {(e["tracking_id"], e["status"] == "sent"): e for e in events}
    final_in_order = by_id[("TRK00300000000", False)]
    assert final_in_order["delivery_latency_ms"] == 500
    assert final_in_order["delivery_latency_final_first"] is False
    late_sent = by_id[("TRK00400000000", True)]
    assert late_sent["delivery_latency_ms"] == 500
    assert late_sent["delivery_latency_final_first"] is True
    assert by_id[("TRK00400000000", False)]["delivery_latency_ms"] is None


async def test_a_slow_restore_holds_up_only_its_own_partition(
    processor_env: dict[str, str],
) -> None:
    """Partitions are opened (fenced, restored) beside the processing loop, not inside the
    rebalance callback: the others process while one partition's restore is still running,
    and that one resumes exactly where it left off once restored."""
    bootstrap, raw = processor_env["KAFKA_BOOTSTRAP_SERVERS"], processor_env["KAFKA_TOPIC_RAW"]
    partitions = int(processor_env["KAFKA_TOPIC_PARTITIONS"])
    before, after = delivery_reports(300, seed=11), delivery_reports(200, seed=12)
    t0 = int(time.time() * 1000) - HOUR_MS
    async with running_processor(processor_env):
        await produce(bootstrap, raw, as_raw(before, t0))
        await wait_caught_up(processor_env)

    release = asyncio.Event()

    class HeldRestore(KafkaClients):
        def reader(self, name: str) -> AIOKafkaConsumer:
            reader = super().reader(name)
            if name.endswith("-0"):  # partition 0's restore waits until released
                start = reader.start

                async def held_start() -> None:
                    await release.wait()
                    await start()

                reader.start = held_start
            return reader

    second = as_raw(before[::4] + after, t0 + 600_000)
    keys = [key for key, *_ in second if key is not None]
    assert len(keys) == len(second)  # each record is keyed by its tracking id
    elsewhere = sum(default_partition(key, partitions) != 0 for key in keys)
    async with running_processor(processor_env, HeldRestore) as (_, registry):
        await produce(bootstrap, raw, second)

        def consumed() -> float:
            return registry.get_sample_value("postback_processor_records_consumed_total") or 0

        deadline = time.monotonic() + 30
        while consumed() < elsewhere:
            assert time.monotonic() < deadline, "the other partitions waited for partition 0"
            await asyncio.sleep(0.05)
        assert consumed() == elsewhere, "partition 0 was processed before its restore"
        release.set()
        await wait_caught_up(processor_env)
        dropped = registry.get_sample_value("postback_processor_duplicates_dropped_total")
        assert dropped == len(before[::4])
    events = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    ids = Counter(orjson.loads(record.value)["event_id"] for record in events)
    assert set(ids) == expected_event_ids(before + after)
    assert max(ids.values()) == 1


async def test_a_partition_that_cannot_be_opened_stops_the_processor(
    processor_env: dict[str, str],
) -> None:
    """A failure while restoring must not leave the partition silently idle (aiokafka drops
    exceptions raised in rebalance callbacks): the processor stops with it, to be restarted."""

    class BrokenRestore(KafkaClients):
        def reader(self, name: str) -> AIOKafkaConsumer:
            raise RuntimeError("the restore broke")

    with pytest.raises(RuntimeError, match="the restore broke"):
        async with running_processor(processor_env, BrokenRestore) as (running, _):
            await asyncio.wait_for(asyncio.shield(running), timeout=30)
