"""Partitions move only when they must: a membership change costs only the moved state.

Three processors share six partitions. When one leaves, the other two take its partitions and
keep their own (their state stays in memory: no rebuild); when it comes back, it takes at most
its share back, and the others keep the rest. aiokafka's default round-robin assignor would
reshuffle every partition on every change, and each moved partition pays a state rebuild.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testkit.kafka_tools import produce
from testkit.services import Service
from testkit.traffic import as_raw, delivery_reports, hours_ago_ms
from tests.integration.consumers.conftest import wait_caught_up, with_processor_settings

pytestmark = pytest.mark.kafka

PARTITIONS = 6


@pytest.fixture
async def started() -> AsyncIterator[list[Service]]:
    services: list[Service] = []
    yield services
    for service in services:
        await service.stop()


async def owned(service: Service) -> set[int]:
    return set((await service.readiness()).get("partitions", []))


async def rebuilt(service: Service) -> float:
    """Partitions whose state this processor had to rebuild (from the state topic or raw)."""
    return await service.metric(
        "postback_processor_partition_opens", state="state"
    ) + await service.metric("postback_processor_partition_opens", state="raw")


async def until_shared(services: list[Service], timeout: float = 60) -> list[set[int]]:
    """Until every partition is owned by exactly one of `services`, and each of them owns
    some (the group has settled after a change); who owns what."""
    deadline = time.monotonic() + timeout
    while True:
        owners = [await owned(service) for service in services]
        every = [p for partitions in owners for p in partitions]
        if sorted(every) == list(range(PARTITIONS)) and all(owners):
            return owners
        assert time.monotonic() < deadline, f"partitions not settled: {owners}"
        await asyncio.sleep(0.2)


async def test_a_member_leaving_and_rejoining_moves_only_its_own_partitions(
    base_env: dict[str, str], tmp_path: Path, started: list[Service]
) -> None:
    """With three instances, one leaving is rebuilt only its partitions elsewhere; coming
    back it takes at most its share; the others keep the partitions and state they had."""
    env = {**with_processor_settings(base_env), "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS)}
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    first, second, third = (
        Service("processor", env, tmp_path, name=f"processor-{n}") for n in (1, 2, 3)
    )
    started.extend([first, second, third])
    await first.start()
    await produce(bootstrap, env["KAFKA_TOPIC_RAW"], as_raw(delivery_reports(600), hours_ago_ms(1)))
    await wait_caught_up(env)
    for service in (second, third):
        await service.start()
    before = await until_shared([first, second, third])
    assert all(len(partitions) == 2 for partitions in before), before
    # Every member processes and commits its share: a moved partition's state must be rebuilt.
    await produce(
        bootstrap, env["KAFKA_TOPIC_RAW"], as_raw(delivery_reports(300, 8), hours_ago_ms(1))
    )
    await wait_caught_up(env)
    rebuilt_before = [await rebuilt(service) for service in (first, second)]

    await third.stop()  # leaves the group: its two partitions must go somewhere
    after_leave = await until_shared([first, second])
    for kept, now in zip(before[:2], after_leave, strict=True):
        assert kept <= now, f"a remaining member lost a partition: {before} -> {after_leave}"
    moved = [len(now - kept) for kept, now in zip(before[:2], after_leave, strict=True)]
    assert sum(moved) == 2
    rebuilt_after = [await rebuilt(service) for service in (first, second)]
    assert [a - b for a, b in zip(rebuilt_after, rebuilt_before, strict=True)] == moved

    comeback = Service("processor", env, tmp_path, name="processor-3-again")
    started.append(comeback)
    await comeback.start()
    after_join = await until_shared([first, second, comeback])
    assert len(after_join[2]) <= 2
    for had, now in zip(after_leave, after_join[:2], strict=True):
        assert now <= had, f"a member was given a partition it did not have: {after_join}"
    rebuilt_final = [await rebuilt(service) for service in (first, second)]
    assert rebuilt_final == rebuilt_after  # nobody rebuilt anything for the comeback
