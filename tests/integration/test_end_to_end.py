"""Edge to events: a postback the edge answered 200 becomes exactly one enriched event."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from common.partitioning import default_partition
from consumers.processor.identity import digest
from consumers.processor.parse import parse
from ingest.keys import body_hash_key
from testkit.kafka_tools import read_all_committed
from testkit.samples import all_valid, content_type
from tests.integration.consumers.conftest import (
    running_processor,
    wait_caught_up,
    with_processor_settings,
)
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


def retries_hashed_apart(partitions: int) -> tuple[bytes, bytes]:
    """A notification without a tracking id and a retry of it re-serialised with other key
    order and spacing, whose byte hashes Kafka maps to different partitions."""
    document = {"origin": "MMS_MT", "code": "N003", "status": "Transcoded", "mms-id": "40211"}
    original = orjson.dumps(document)
    home = default_partition(body_hash_key(original), partitions)
    for spaces in range(1, 64):
        retry = (", " + " " * spaces).join(
            f'"{name}": "{value}"' for name, value in reversed(document.items())
        )
        retry_body = f"{{ {retry} }}".encode()
        if default_partition(body_hash_key(retry_body), partitions) != home:
            assert digest(parse(retry_body)) == digest(parse(original))
            return original, retry_body
    raise AssertionError("no spacing moves the byte hash to another partition")


async def test_a_reserialised_retry_without_tracking_id_becomes_no_second_event(
    base_env: dict[str, str],
) -> None:
    """A provider retry of a notification without a tracking id, re-serialised with other
    spacing and key order, meets its original in one partition's dedupe window: one event."""
    env = with_processor_settings(base_env)
    original, retry = retries_hashed_apart(int(env["KAFKA_TOPIC_PARTITIONS"]))
    async with running_edge(env) as edge, running_processor(env):
        async with httpx.AsyncClient(timeout=10) as client:
            for body in (original, retry):
                response = await client.post(
                    edge.url + "/postbacks/mt",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 200
        await wait_caught_up(env)
    events = await read_all_committed(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_EVENTS"])
    assert [orjson.loads(event.value)["event_id"] for event in events] == [
        digest(parse(original)).hex()
    ]
