"""Exactly once under faults: kill -9 mid-stream, and partitions moving between processors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest

from testkit.kafka_tools import committed_total, produce, read_all_committed
from testkit.traffic import as_raw, hours_ago_ms, realistic_mix
from tests.integration.conftest import StartService
from tests.integration.consumers.conftest import wait_caught_up

pytestmark = pytest.mark.kafka


async def wait_committed(env: dict[str, str], at_least: int, timeout: float = 60) -> None:
    """Until the group has committed `at_least` raw records: the stream is mid-way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = await committed_total(
            env["KAFKA_BOOTSTRAP_SERVERS"], env["PROCESSOR_GROUP_ID"], env["KAFKA_TOPIC_RAW"]
        )
        if total >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} records committed in {timeout} s")


async def assert_exactly_once(
    env: dict[str, str], event_ids: set[str], malformed: set[bytes]
) -> None:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    events = await read_all_committed(bootstrap, env["KAFKA_TOPIC_EVENTS"])
    counts = Counter(orjson.loads(record.value)["event_id"] for record in events)
    duplicated = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} notifications emitted more than once"
    assert not event_ids - set(counts), f"{len(event_ids - set(counts))} notifications lost"
    assert set(counts) == event_ids
    letters = Counter(
        record.value for record in await read_all_committed(bootstrap, env["KAFKA_TOPIC_DLQ"])
    )
    assert set(letters) == malformed
    assert max(letters.values()) == 1


async def test_kill_9_mid_stream_then_restart_loses_and_repeats_nothing(
    processor_env: dict[str, str], services: StartService
) -> None:
    """A processor killed with open transactions leaves no trace in read_committed output;
    its successor resumes at the last commit with the dedupe state rebuilt from the state
    topic (what the committed transactions wrote, not what the killed one held), so that the
    retries that follow, of notifications processed before the kill, are dropped as the lost
    state would have dropped them."""
    env = {**processor_env, "PROCESSOR_COMMIT_MAX_RECORDS": "500"}
    mix = realistic_mix(20_000)
    first = services("processor", env)
    await first.start()
    await produce(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        env["KAFKA_TOPIC_RAW"],
        as_raw(mix.bodies, hours_ago_ms(1)),
    )
    await wait_committed(env, len(mix.bodies) // 4)
    await first.kill()

    second = services("processor", env)
    await second.start()
    await wait_caught_up(env)
    from_state = await second.metric("postback_processor_partition_opens", state="state")
    assert from_state == int(env["KAFKA_TOPIC_PARTITIONS"])
    assert await second.stop() == 0
    await assert_exactly_once(env, mix.event_ids, mix.malformed)


async def test_rebalances_and_a_killed_member_keep_exactly_once(
    processor_env: dict[str, str], services: StartService
) -> None:
    """Partitions move when a second processor joins and again when one dies: every
    notification still appears exactly once."""
    env = {**processor_env, "PROCESSOR_COMMIT_MAX_RECORDS": "500"}
    bootstrap, raw = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"]
    mix = realistic_mix(16_000, seed=9)
    half = len(mix.bodies) // 2
    records = as_raw(mix.bodies, hours_ago_ms(1))
    first = services("processor", env)
    second = services("processor", env)
    await first.start()
    await produce(bootstrap, raw, records[:half])
    await wait_committed(env, half // 3)
    await second.start()  # joins: partitions are revoked from the first and shared
    await produce(bootstrap, raw, records[half:])
    await wait_committed(env, half + half // 4)
    await first.kill()  # its partitions move to the second after the session timeout
    await wait_caught_up(env, timeout=90)
    assert await second.stop() == 0
    await assert_exactly_once(env, mix.event_ids, mix.malformed)
