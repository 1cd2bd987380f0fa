"""Exactly once through a broker restart: the processor rides out Kafka going away mid-stream.

Each test gets a broker of its own (the suite's shared one must keep serving), stops it while
a processor process is half-way through the raw topic with transactions open, keeps it down
for a few seconds, starts it again on the same data directory and port, and then checks that
the same process, without being restarted, caught up with output exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devstack.kafka import LocalKafka
from tests.integration.consumers.conftest import ProcessorProcess, wait_caught_up
from tests.integration.consumers.test_processor_faults import assert_exactly_once, wait_committed
from tests.kafka_tools import produce
from tests.traffic import as_raw, hours_ago_ms, realistic_mix

pytestmark = pytest.mark.kafka

# The outage itself is the scenario: long enough for every client to lose its connections,
# the consumer its coordinator and the group its session (6 s in `processor_env`) to expire.
DOWN_S = 5.0


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker this test may stop and restart without disturbing the rest of the suite."""
    with LocalKafka() as broker:
        yield broker


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_restart_mid_stream_loses_and_repeats_nothing(
    how: str,
    own_broker: LocalKafka,
    processor_env: dict[str, str],
    processes: list[ProcessorProcess],
) -> None:
    """When Kafka restarts under a running processor, every notification still appears once in
    the events topic, and the processor recovers by itself, without being restarted."""
    env = {
        **processor_env,
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        "PROCESSOR_COMMIT_MAX_RECORDS": "500",
    }
    bootstrap, raw = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"]
    mix = realistic_mix(16_000, seed=21)
    records = as_raw(mix.bodies, hours_ago_ms(1))
    half = len(records) // 2
    processor = ProcessorProcess(env)
    processes.append(processor)
    await processor.start()
    await produce(bootstrap, raw, records[:half])
    await wait_committed(env, half // 4)

    # Mid-stream: transactions are open and batches in flight when the broker goes.
    if how == "sigterm":
        await asyncio.to_thread(own_broker.stop)
    else:
        await asyncio.to_thread(own_broker.kill)
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(own_broker.start)
    assert processor.process is not None
    assert processor.process.returncode is None, "the processor died during the outage"

    # Traffic that arrives after the restart must flow through the same process too.
    await produce(bootstrap, raw, records[half:])
    await wait_caught_up(env, timeout=75)
    assert processor.process.returncode is None, "the processor exited instead of recovering"
    assert await processor.stop() == 0
    await assert_exactly_once(env, mix.event_ids, mix.malformed)
