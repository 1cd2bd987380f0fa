"""The edge through a Kafka outage: fast 503s while the broker is down, 200s once it is back."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from devstack.kafka import LocalKafka
from testkit.kafka_tools import read_records
from tests.integration.ingest.conftest import running_edge

pytestmark = pytest.mark.kafka


async def test_503_within_the_deadline_while_kafka_is_down_then_200_without_restart(
    own_broker: LocalKafka, edge_env: dict[str, str], client: httpx.AsyncClient
) -> None:
    """A dead broker never makes the edge hang or lie; it recovers by itself when Kafka does."""
    env = {**edge_env, "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers}
    accepted: list[bytes] = []
    async with running_edge(env) as edge:

        async def post(body: bytes) -> httpx.Response:
            response = await client.post(edge.url + "/postbacks", content=body)
            if response.status_code == 200:
                accepted.append(body)
            return response

        assert (await post(b'{"tracking-id":"before"}')).status_code == 200

        own_broker.stop()
        started = time.monotonic()
        during = await post(b'{"tracking-id":"during"}')
        elapsed = time.monotonic() - started
        assert during.status_code == 503
        assert during.headers["retry-after"] == str(edge.settings.retry_after_s)
        assert elapsed < edge.settings.answer_deadline_s + 1.0
        readiness = await client.get(edge.url + "/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["kafka_up"] is False
        assert edge.metric("postback_edge_kafka_up") == 0
        assert edge.metric("postback_edge_kafka_outage_seconds") > 0
        budget = edge.metric("postback_edge_provider_retry_budget_seconds")
        assert 0 < budget < edge.settings.provider_retry_horizon_s

        await asyncio.to_thread(own_broker.start)
        recovered_at = None
        for attempt in range(60):  # each attempt answers within the deadline
            response = await post(f'{{"tracking-id":"after-{attempt}"}}'.encode())
            if response.status_code == 200:
                recovered_at = attempt
                break
            assert response.status_code == 503
        assert recovered_at is not None, "the edge never recovered"
        assert (await client.get(edge.url + "/readyz")).status_code == 200
        assert edge.metric("postback_edge_kafka_outage_seconds") == 0
        assert edge.metric("postback_edge_provider_retry_budget_seconds") == (
            edge.settings.provider_retry_horizon_s
        )
        refused = edge.metric("postback_edge_refusals_total", reason="kafka_timeout")
        refused += edge.metric("postback_edge_refusals_total", reason="kafka_error")
        assert refused >= 1

    records = await read_records(
        own_broker.bootstrap_servers, edge.settings.topics.raw.name, 100, 5
    )
    stored = [record.value for record in records]
    for body in accepted:
        assert body in stored, body
