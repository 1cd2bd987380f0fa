"""Runs the real processor: in this test's event loop, or as a process a test can kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from consumers.clients import KafkaClients
from consumers.instruments import ProcessorMetrics
from consumers.runtime import ProcessorRuntime
from consumers.settings import ProcessorSettings
from testkit.kafka_tools import committed_total, topic_size


@pytest.fixture
def processor_env(base_env: dict[str, str]) -> dict[str, str]:
    return with_processor_settings(base_env)


def with_processor_settings(base_env: dict[str, str]) -> dict[str, str]:
    """A private group and transactional ids per test, and quick commits."""
    run = uuid.uuid4().hex[:8]
    return {
        **base_env,
        "PROCESSOR_GROUP_ID": f"processor-{run}",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX": f"processor-{run}",
        "PROCESSOR_COMMIT_INTERVAL_MS": "50",
        "PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        "PROCESSOR_PORT": "0",
    }


@contextlib.asynccontextmanager
async def running_processor(
    env: dict[str, str], clients: type[KafkaClients] = KafkaClients
) -> AsyncIterator[tuple[asyncio.Task[None], CollectorRegistry]]:
    """The processor in this event loop; its task is exposed so a test can tell a crash.

    `clients` is the factory of its Kafka clients: a test passes a subclass of KafkaClients
    whose clients fail or stall on cue.
    """
    settings = ProcessorSettings.from_environ(env)
    registry = CollectorRegistry()
    runtime = ProcessorRuntime(settings, ProcessorMetrics(registry), clients(settings))
    await runtime.start()
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    try:
        yield running, registry
    finally:
        stop.set()
        await running


async def wait_caught_up(env: dict[str, str], timeout: float = 60) -> None:
    """Until the processor group has committed every raw record (events are then visible)."""
    bootstrap, raw = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"]
    deadline = time.monotonic() + timeout
    size = await topic_size(bootstrap, raw)
    while time.monotonic() < deadline:
        if await committed_total(bootstrap, env["PROCESSOR_GROUP_ID"], raw) >= size:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the processor did not catch up with the raw topic")
