"""The metrics service on a real broker: what /metrics says is what the events topic holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from common.kafka import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from consumers.metrics.service import MetricsService
from consumers.metrics.settings import MetricsSettings
from consumers.processor.enrich import enrich
from consumers.processor.identity import Identity
from consumers.processor.parse import parse
from consumers.processor.rawmeta import RawMeta
from devstack.kafka import free_port
from testkit.kafka_tools import committed_total, topic_size
from testkit.samples import all_valid

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[3]
RECEIVED_AT_MS = 1_709_648_570_000  # 2024-03-05T14:22:50Z
FINAL_DELIVERY_STATUSES = {"delivered", "expired", "failed", "rejected"}
# Records that are on the topic but are not events; the service must count and skip them.
UNREADABLE = [b"{not json", b"[1, 2, 3]"]


def pipeline_events() -> list[dict[str, object]]:
    """The event of every sample postback, as the processor makes it, with delivery latencies.

    The processor puts a latency on a final outcome whose sent notification it saw; here every
    final delivery outcome with a tracking id gets one, and one late sent carries a final-first
    latency, as the processor writes them.
    """
    events = []
    for offset, (_kind, body) in enumerate(all_valid()):
        notification = parse(body)
        meta = RawMeta("postbacks.raw", 0, offset, RECEIVED_AT_MS + offset, "mt")
        event: dict[str, object] = dict(enrich(notification, meta, Identity().digest(notification)))
        event["delivery_latency_ms"] = None
        event["delivery_latency_final_first"] = None
        if event["tracking_id"] is not None and event["status"] in FINAL_DELIVERY_STATUSES:
            event["delivery_latency_ms"] = 1_000 * (offset + 1)
            event["delivery_latency_final_first"] = False
        events.append(event)
    late_sent = next(e for e in events if e["status"] == "sent")
    late_sent["delivery_latency_ms"] = 4_500
    late_sent["delivery_latency_final_first"] = True
    return events


async def write_events(
    bootstrap: str, topic: str, events: list[dict[str, object]], partitions: int
) -> None:
    """Write as the processor does, in transactions; first one that aborts, on every partition.

    The aborted records come first in each partition, so once the service has read up to the
    end of every partition it has definitely passed (and must have skipped) them.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-metrics-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        for partition in range(partitions):
            aborted = {**events[0], "origin": "ABORTED", "operator_id": "ABORTED"}
            await producer.send_and_wait(topic, orjson.dumps(aborted), partition=partition)
        await producer.abort_transaction()

        async with producer.transaction():
            for event in events:
                key = str(event["tracking_id"] or event["event_id"]).encode()
                await producer.send(topic, orjson.dumps(event), key=key)
            for value in UNREADABLE:
                await producer.send(topic, value, key=b"unreadable")
    finally:
        await producer.stop()


def scrape(text: str) -> Callable[..., float]:
    """A reader over exposition text: the sum of samples named `name` carrying `labels`."""
    samples = [
        sample for family in text_string_to_metric_families(text) for sample in family.samples
    ]

    def total(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    return total


async def group_members(bootstrap: str, group: str) -> list[object]:
    """The members a consumer group has right now, as the broker's coordinator sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        # DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members, ...)
        members: list[object] = response.groups[0][5]
        return members
    finally:
        await admin.close()


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def metrics_env(base_env: dict[str, str]) -> dict[str, str]:
    return {
        **base_env,
        "METRICS_GROUP_ID": f"metrics-{uuid.uuid4().hex[:8]}",
        "METRICS_PORT": "0",
        "METRICS_AUTO_OFFSET_RESET": "earliest",
    }


@contextlib.asynccontextmanager
async def running_service(
    env: dict[str, str],
) -> AsyncIterator[tuple[MetricsService, CollectorRegistry]]:
    registry = CollectorRegistry()
    service = MetricsService(MetricsSettings.from_environ(env), registry)
    serving = asyncio.create_task(service.serve())
    try:
        await eventually(
            lambda: serving.done() or service.readiness()[0], "the service is ready", 30
        )
        if serving.done():
            serving.result()
        yield service, registry
    finally:
        service.request_stop()
        await asyncio.wait_for(serving, timeout=15)


async def test_metrics_match_the_committed_events(metrics_env: dict[str, str]) -> None:
    """/metrics counts each committed event once by status, operator, country; nothing else."""
    bootstrap = metrics_env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = TopicSettings.from_environ(metrics_env)
    await ensure_topics(
        KafkaSettings.from_environ(metrics_env), [topics.events], create_missing=True
    )
    events = pipeline_events()
    await write_events(bootstrap, topics.events.name, events, topics.events.partitions)
    records = len(events) + len(UNREADABLE)

    async with running_service(metrics_env) as (service, registry):

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        def caught_up() -> bool:
            lags = [value("postback_metrics_consumer_lag", partition=str(p)) for p in range(3)]
            consumed = value("postback_events_consumed_total") or 0
            return consumed >= records and lags == [0, 0, 0]

        await eventually(caught_up, "the service read up to the end of every partition")
        async with httpx.AsyncClient(timeout=5) as client:
            base = f"http://127.0.0.1:{service.port}"
            exposed = await client.get(f"{base}/metrics")
            ready = await client.get(f"{base}/readyz")

    assert exposed.status_code == 200
    assert ready.status_code == 200
    assert sorted(ready.json()["partitions"]) == [0, 1, 2]
    total = scrape(exposed.text)
    assert total("postback_events_consumed_total") == records
    assert total("postback_events_total") == len(events)
    assert total("postback_events_total", origin="ABORTED") == 0
    assert total("postback_events_unparseable_total", reason="invalid_json") == 1
    assert total("postback_events_unparseable_total", reason="not_an_object") == 1

    for status, count in Counter(str(e["status"]) for e in events).items():
        assert total("postback_events_total", status=status) == count, status
    for operator, count in Counter(str(e["operator_id"] or "none") for e in events).items():
        assert total("postback_operator_events_total", operator_id=operator) == count, operator

    def country(event: dict[str, object]) -> str:
        inbound = str(event["origin"]).endswith("_MO")
        return str(event["from_region" if inbound else "to_region"] or "none")

    for region, count in Counter(country(e) for e in events).items():
        assert total("postback_operator_events_total", country=region) == count, region
    finals = [e for e in events if e["is_final"] is True]
    assert total("postback_final_outcomes_total") == len(finals)
    failed = sum(1 for e in finals if e["status"] == "failed" and e["operator_id"] == "0001570")
    assert total("postback_final_outcomes_total", operator_id="0001570", status="failed") == failed
    assert total("postback_errors_total") == sum(1 for e in events if e["is_error"] is True)

    latencies = [e["delivery_latency_ms"] for e in events if e["delivery_latency_ms"] is not None]
    assert total("postback_delivery_latency_seconds_count") == len(latencies)
    assert total("postback_delivery_latency_seconds_sum") == pytest.approx(
        sum(int(str(ms)) for ms in latencies) / 1000
    )
    lags = [e["postback_lag_ms"] for e in events if e["postback_lag_ms"] is not None]
    assert total("postback_lag_seconds_count") == len(lags)
    negative = sum(1 for ms in lags if int(str(ms)) < 0)
    assert total("postback_negative_durations_total", measure="postback_lag") == negative
    newest_s = (RECEIVED_AT_MS + len(events) - 1) // 1000
    assert int(total("postback_last_event_received_timestamp_seconds")) == newest_s
    assert total("postback_operator_info", operator_id="0001470", operator_name="AT&T") == 1


async def test_sigterm_commits_and_exits_cleanly(metrics_env: dict[str, str]) -> None:
    """On SIGTERM the process commits what it read, leaves its group and exits 0."""
    bootstrap = metrics_env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = TopicSettings.from_environ(metrics_env)
    await ensure_topics(
        KafkaSettings.from_environ(metrics_env), [topics.events], create_missing=True
    )
    await write_events(bootstrap, topics.events.name, pipeline_events()[:5], 1)
    size = await topic_size(bootstrap, topics.events.name)
    port = free_port()
    env = {**os.environ, **metrics_env, "METRICS_PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers.metrics", env=env, cwd=REPO, stdout=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 30
            consumed = 0.0
            while consumed < 5 + len(UNREADABLE):
                assert process.returncode is None, "the service exited before consuming"
                assert time.monotonic() < deadline, "the service did not consume the events"
                with contextlib.suppress(httpx.TransportError):
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                    consumed = scrape(text)("postback_events_consumed_total")
                await asyncio.sleep(0.05)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    group = metrics_env["METRICS_GROUP_ID"]
    assert await committed_total(bootstrap, group, topics.events.name) == size
    assert await group_members(bootstrap, group) == [], "it did not leave the group"


async def test_invalid_settings_exit_2_naming_the_variable() -> None:
    """A typo in the deployment stops the process at once, saying which variable is wrong."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "METRICS_TOP_OPERATORS": "fifty",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers.metrics",
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode == 2
    assert b"METRICS_TOP_OPERATORS" in stderr
