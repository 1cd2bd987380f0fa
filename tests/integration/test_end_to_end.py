"""Edge to events: a postback the edge answered 200 becomes exactly one enriched event."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from testkit.kafka_tools import read_all_committed
from testkit.samples import all_valid, content_type
from tests.integration.consumers.conftest import running_processor, with_processor_settings
from tests.integration.ingest.conftest import running_edge

pytestmark = pytest.mark.kafka


async def test_every_sample_posted_to_the_edge_becomes_one_event(
    base_env: dict[str, str],
) -> None:
    """What the provider posts, retries included, reaches analytics once, with the edge's facts."""
    processor_env = with_processor_settings(base_env)
    bootstrap = processor_env["KAFKA_BOOTSTRAP_SERVERS"]
    samples = all_valid()
    async with running_edge(processor_env) as edge, running_processor(processor_env):
        async with httpx.AsyncClient(timeout=10) as client:
            for kind, body in samples + samples[:5]:  # the first five are retried
                response = await client.post(
                    edge.url + "/postbacks/acme",
                    content=body,
                    headers={"content-type": content_type(kind)},
                )
                assert response.status_code == 200, kind
        expected = len({body for _, body in samples})
        deadline = time.monotonic() + 30
        events: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            records = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
            events = [orjson.loads(record.value) for record in records]
            if len(events) >= expected:
                break
            await asyncio.sleep(0.1)
    assert len(events) == expected
    assert len({event["event_id"] for event in events}) == expected
    assert {event["source"] for event in events} == {"acme"}
    assert all(event["received_at"] for event in events)
    assert {event["input_format"] for event in events} >= {"json_v2", "xml_v1"}
