"""Exactly once through broker restarts: the processor rides out Kafka going away mid-stream.

Every test here has a broker of its own (the suite's shared one must keep serving). The restart
tests stop it while the processor is part-way through the raw topic with transactions open,
keep it down, start it again on the same data directory and port, and check that the same
processor, never restarted, caught up with every notification emitted exactly once. The last
two tests cover what a long outage does to the producers: sends that fail for good.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import LeaderNotAvailableError
from aiokafka.structs import TopicPartition

from consumers.clients import KafkaClients
from devstack.kafka import LocalKafka
from testkit.kafka_tools import produce
from testkit.traffic import as_raw, hours_ago_ms, realistic_mix
from tests.integration.conftest import StartService
from tests.integration.consumers.conftest import (
    running_processor,
    wait_caught_up,
)
from tests.integration.consumers.test_processor_faults import assert_exactly_once, wait_committed

pytestmark = pytest.mark.kafka

# The outage is the scenario, not a stand-in for an event: long enough for every client to
# lose its connections and for the group session (6 s in `processor_env`) to run out.
DOWN_S = 5.0


@pytest.fixture
def kafka_bootstrap(own_broker: LocalKafka) -> str:
    """Every service and helper of these tests talks to the broker the test restarts."""
    return own_broker.bootstrap_servers


async def caught_up_unless_crashed(env: dict[str, str], running: asyncio.Task[None]) -> None:
    """`wait_caught_up`, failing at once with the processor's own error if it dies first."""
    catching_up = asyncio.create_task(wait_caught_up(env, timeout=75))
    await asyncio.wait({catching_up, running}, return_when=asyncio.FIRST_COMPLETED)
    if not catching_up.done():
        catching_up.cancel()
        running.result()
        raise AssertionError("the processor stopped before it caught up")
    catching_up.result()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_broker_restart_mid_stream_loses_and_repeats_nothing(
    how: str,
    own_broker: LocalKafka,
    processor_env: dict[str, str],
    services: StartService,
) -> None:
    """A Kafka restart mid-stream loses and repeats nothing; the processor recovers by itself.

    The processor is a process of its own, as in production, and is never restarted.
    """
    # A commit the client never ends after the restart is given up at the transaction
    # timeout (OwnedPartition.commit): 20 s keeps that case within the wait below.
    env = {
        **processor_env,
        "PROCESSOR_COMMIT_MAX_RECORDS": "500",
        "PROCESSOR_TRANSACTION_TIMEOUT_MS": "20000",
    }
    mix = realistic_mix(10_000, seed=21)
    processor = services("processor", env)
    await processor.start()
    await produce(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"], as_raw(mix.bodies, hours_ago_ms(1))
    )
    await wait_committed(env, len(mix.bodies) // 5)

    await asyncio.to_thread(own_broker.stop if how == "sigterm" else own_broker.kill)
    # With the broker gone nothing more can be fetched: this is where the stream broke off.
    consumed = await processor.metric("postback_processor_records_consumed")
    assert consumed < len(mix.bodies), "the stream was over before the broker went down"
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(own_broker.start)

    try:
        await wait_caught_up(env, timeout=75)
    except AssertionError as stuck:
        tail = processor.log_tail(80)
        raise AssertionError(f"{stuck}; the processor's log ends:\n{tail}") from None
    assert processor.running, "the processor exited instead of recovering"
    assert await processor.stop() == 0
    await assert_exactly_once(env, mix.event_ids, mix.malformed)


async def test_outage_longer_than_the_producer_request_timeout_loses_and_repeats_nothing(
    own_broker: LocalKafka, processor_env: dict[str, str]
) -> None:
    """Sends failing in an outage longer than the request timeout rewind; nothing crashes.

    aiokafka's producer request timeout is 40 s, which would make this test a minute longer;
    cutting the processor's producers to 3 s makes an 8 s outage the same event (in-process,
    to reach the producers). A processor that let `send()` raise out of its loop died here.
    """

    class QuickTimeout(KafkaClients):
        def producer_options(self, tp: TopicPartition) -> dict[str, Any]:
            return {**super().producer_options(tp), "request_timeout_ms": 3000}

    env = {**processor_env, "PROCESSOR_COMMIT_MAX_RECORDS": "500"}
    mix = realistic_mix(10_000, seed=23)
    async with running_processor(env, QuickTimeout) as (running, registry):
        await produce(
            env["KAFKA_BOOTSTRAP_SERVERS"],
            env["KAFKA_TOPIC_RAW"],
            as_raw(mix.bodies, hours_ago_ms(1)),
        )
        await wait_committed(env, len(mix.bodies) // 5)
        await asyncio.to_thread(own_broker.stop)
        consumed = registry.get_sample_value("postback_processor_records_consumed_total")
        assert consumed is not None
        assert consumed < len(mix.bodies), "the stream was over before the broker went down"
        await asyncio.sleep(8.0)
        await asyncio.to_thread(own_broker.start)
        await caught_up_unless_crashed(env, running)
    await assert_exactly_once(env, mix.event_ids, mix.malformed)


def losing_the_nth_write(nth: int) -> type[KafkaClients]:
    """Clients whose producers' `nth` write (a `send` or a `send_batch`, counted across
    instances) fails for good, unwritten: what an outage longer than the request timeout does
    to the batches a producer held."""
    writes = itertools.count(1)

    def lost() -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(LeaderNotAvailableError())
        return future

    class LosesOneWrite(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
        async def send(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            if next(writes) == nth:
                return lost()
            sent: asyncio.Future[Any] = await super().send(topic, *args, **kwargs)
            return sent

        async def send_batch(self, batch: Any, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
            if next(writes) == nth:
                return lost()
            sent: asyncio.Future[Any] = await super().send_batch(batch, topic, **kwargs)
            return sent

    class Clients(KafkaClients):
        def transactional_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
            return LosesOneWrite(**self.producer_options(tp))

    return Clients


async def test_a_record_kafka_failed_to_write_is_written_again_never_committed_over(
    processor_env: dict[str, str],
) -> None:
    """Records Kafka never wrote abort their transaction: they are written again, not skipped.

    aiokafka commits a transaction over a failed send, consumed offsets included; the
    processor must check every delivery itself before it commits.
    """
    mix = realistic_mix(3_000, seed=25)
    async with running_processor(processor_env, losing_the_nth_write(10)) as (running, registry):
        await produce(
            processor_env["KAFKA_BOOTSTRAP_SERVERS"],
            processor_env["KAFKA_TOPIC_RAW"],
            as_raw(mix.bodies, hours_ago_ms(1)),
        )
        await caught_up_unless_crashed(processor_env, running)
    await assert_exactly_once(processor_env, mix.event_ids, mix.malformed)
    aborted = {"result": "aborted"}
    assert registry.get_sample_value("postback_processor_transactions_total", aborted) == 1
