"""The provider simulator through a Kafka restart: fast 503s while the broker is down, then
every acknowledged notification in the events topic exactly once.

The test has a broker of its own (the suite's shared one must keep serving). The real edge and
processor run against it while the simulator sends. Once the edge has stored part of the
traffic the broker is stopped, with the simulator still sending; it stays down until the edge
has refused postbacks, and is started again on the same port and data directory. Neither
service is restarted, and the simulator runs on through it all with the provider's rules.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import orjson
import pytest

from devstack.kafka import LocalKafka
from simulator.cli import OK, run
from testkit.kafka_tools import read_all_committed, topic_size
from tests.integration.consumers.conftest import running_processor, with_processor_settings
from tests.integration.ingest.conftest import RunningEdge, running_edge

pytestmark = pytest.mark.kafka

# The broker goes down early in the run, so that most postbacks are still to be sent: even at
# the edge's full serial speed they outlast the few hundred milliseconds a broker takes to
# stop serving after SIGTERM, so the simulator meets the outage.
COUNT = 500
STOP_AFTER = 50  # postbacks the edge acknowledged before the broker is stopped
REFUSED_BEFORE_RESTART = 2  # 503s the edge answered before the broker is started again
PROVIDER_ANSWER_TIMEOUT_S = 10  # the provider drops an attempt not answered within this
# The provider's rules, scaled down: five retries five minutes apart outlast a broker restart.
# Here a refused postback comes back after 6 s plus the 2 s each refusal takes, so its five
# retries span 40 s or more, while the outage (stop, the refusals awaited, a broker start)
# lasts about 10 s, and up to about 30 s on a heavily loaded machine.
RETRY_DELAY_S = 6
EDGE_ANSWER_DEADLINE_S = 2  # 503 within this; the default of 5 s would only slow the test


@pytest.fixture
def kafka_bootstrap(own_broker: LocalKafka) -> str:
    """The edge, the processor and the simulator's check all use the broker restarted."""
    return own_broker.bootstrap_servers


def accepted(edge: RunningEdge) -> float:
    return edge.metric("postback_edge_requests_total", source="mt", status="200")


def refused_for_kafka(edge: RunningEdge) -> float:
    """Postbacks the edge answered 503 because Kafka did not store them (in time)."""
    return sum(
        edge.metric("postback_edge_refusals_total", reason=reason)
        for reason in ("kafka_timeout", "kafka_error")
    )


async def until(condition: Callable[[], bool], sending: asyncio.Task[int], what: str) -> None:
    """Wait until `condition` holds; fail if the simulator's run ends first or it never does."""
    deadline = time.monotonic() + 30
    while not condition():
        if sending.done():
            raise AssertionError(f"the simulator's run ended before {what}: {sending.result()}")
        assert time.monotonic() < deadline, f"{what}: not within 30 s"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_a_broker_restart_mid_run_costs_retries_never_a_hang_or_an_event(
    how: str, own_broker: LocalKafka, base_env: dict[str, str]
) -> None:
    """Through a broker restart the provider gets prompt 503s, then every notification is
    acknowledged and becomes exactly one event; neither service needs restarting."""
    env = {
        **with_processor_settings(base_env),
        "EDGE_ANSWER_DEADLINE_SECONDS": str(EDGE_ANSWER_DEADLINE_S),
        "EDGE_KAFKA_PROBE_SECONDS": "0.5",
    }
    bootstrap, events_topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_EVENTS"]
    out = io.StringIO()
    async with running_edge(env) as edge, running_processor(env):
        sending = asyncio.create_task(
            run(
                [
                    "--url", f"{edge.url}/postbacks/mt",
                    "--count", str(COUNT),
                    "--seed", "20240306",
                    "--xml-share", "0.2",
                    "--malformed-share", "0.05",
                    "--answer-timeout", str(PROVIDER_ANSWER_TIMEOUT_S),
                    "--retry-delay", str(RETRY_DELAY_S),
                    "--max-duration", "60",  # a stuck run still ends with a report
                    "--check-events",
                    "--bootstrap-servers", bootstrap,
                    "--events-topic", events_topic,
                    "--wait", "20",
                    "--settle", "1",
                    "--json",
                    "--quiet",
                ],
                out=out,
                environ={},
            )
        )  # fmt: skip
        await until(lambda: accepted(edge) >= STOP_AFTER, sending, "the broker was stopped")
        await asyncio.to_thread(own_broker.stop if how == "sigterm" else own_broker.kill)
        await until(
            lambda: refused_for_kafka(edge) >= REFUSED_BEFORE_RESTART,
            sending,
            "the edge refused postbacks for the outage",
        )
        await asyncio.to_thread(own_broker.start)
        status = await sending
        refused = refused_for_kafka(edge)
        raw_records = await topic_size(bootstrap, env["KAFKA_TOPIC_RAW"])
        events = await read_all_committed(bootstrap, events_topic)
    shown = out.getvalue()  # the whole report, for any assertion below that fails
    report = orjson.loads(shown)
    check = report["check"]
    assert status == OK, shown
    # Every attempt was answered, within the provider's 10 s: the outage's ones with a 503.
    assert report["failures"] == {}, shown  # no timeouts, no broken connections
    assert report["latency_ms"]["max"] < PROVIDER_ANSWER_TIMEOUT_S * 1000, shown
    assert report["statuses"] == {"200": COUNT, "503": refused}, shown
    assert (report["acked"], report["given_up"], report["abandoned"]) == (COUNT, 0, 0), shown
    assert raw_records >= COUNT  # refused postbacks may have been stored as well
    well_formed = COUNT - report["wires"]["malformed"]
    assert check["passed"] is True, shown
    assert (check["expected"], check["found"]) == (well_formed, well_formed)
    assert (check["missing"], check["duplicated"], check["malformed_as_events"]) == (0, 0, 0)
    # Read independently of the simulator: nothing stored twice became a second event.
    event_ids = [orjson.loads(record.value)["event_id"] for record in events]
    assert len(event_ids) == len(set(event_ids)) == well_formed
