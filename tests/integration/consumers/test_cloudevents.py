"""Event records read back from the broker are CloudEvents to the SDK's own Kafka binding."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from common.topics import TopicSettings, ensure_topics
from consumers import dlq
from consumers.events.model import SCHEMA_ID, SCHEMA_VERSION
from consumers.replay import replay
from consumers.settings import ProcessorSettings
from testkit.kafka_tools import produce, read_all_committed
from testkit.samples import all_malformed, all_valid
from testkit.traffic import as_raw, hours_ago_ms
from tests.integration.consumers.conftest import running_processor, wait_caught_up

pytestmark = pytest.mark.kafka


def expected_kind(body: dict[str, Any]) -> str:
    """The kind docs/events.md gives a notification, read off its origin and status."""
    if body["status"] in {"transcoded", "transcoding_failed", "content_invalid"}:
        return "transcoding"
    if body["origin"] == "GENERATE_PASS":
        return "pass"
    if body["origin"].endswith("SUB"):
        return "subscription"
    return {"MT": "delivery", "MO": "inbound"}[body["origin"][-2:]]


def as_cloudevent(record: ConsumerRecord[bytes, bytes]) -> tuple[dict[str, Any], Any]:
    """(event body, CloudEvent) of one record, decoded by the SDK from the record as stored."""
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    return orjson.loads(record.value), from_binary(message, JSONFormat())


def check_attributes(body: dict[str, Any], event: Any, key: bytes) -> None:
    """Each CloudEvents attribute says what the event body says."""
    assert event.get_specversion() == "1.0"
    assert event.get_id() == body["event_id"]
    assert event.get_data() == body  # the value is the plain JSON event
    assert event.get_datacontenttype() == "application/json"
    assert event.get_dataschema() == SCHEMA_ID == f"urn:postback-pipeline:event:{SCHEMA_VERSION}"
    source = urlsplit(event.get_source())
    assert (source.scheme, source.netloc) == ("", "")  # a URI-reference: the edge's path
    assert source.path == f"/postbacks/{body['source']}"
    assert event.get_type() == f"postback.{expected_kind(body)}.v{SCHEMA_VERSION}"
    assert event.get_time() == datetime.fromisoformat(body["received_at"])
    assert event.get_subject() == body["tracking_id"]
    assert event.get_extension("partitionkey") == key.decode()  # the key, as the SDK maps it
    assert key.decode() == (body["tracking_id"] or body["event_id"])


async def test_events_read_through_the_sdk_carry_attributes_matching_their_bodies(
    processor_env: dict[str, str],
) -> None:
    """Every sample's event is a valid binary-mode CloudEvent whose id, source, type, time,
    subject and dataschema match its body; dead letters keep their dlq-* headers only."""
    bootstrap = processor_env["KAFKA_BOOTSTRAP_SERVERS"]
    samples = [body for _, body in all_valid()]
    malformed = [body for _, body in all_malformed()]
    settings = ProcessorSettings.from_environ(processor_env)
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    await produce(
        bootstrap,
        processor_env["KAFKA_TOPIC_RAW"],
        as_raw(samples + malformed, hours_ago_ms(1)),
    )
    async with running_processor(processor_env):
        await wait_caught_up(processor_env)

    records = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    assert len(records) == len(samples)
    for record in records:
        body, event = as_cloudevent(record)
        assert record.key is not None
        check_attributes(body, event, record.key)
    kinds = {as_cloudevent(record)[1].get_type().split(".")[1] for record in records}
    assert kinds == {"delivery", "transcoding", "inbound", "subscription", "pass"}
    dead_letters = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_DLQ"])
    assert len(dead_letters) == len(malformed)
    for record in dead_letters:
        names = {name for name, _ in record.headers}
        assert dlq.REASON in names
        assert not any(name.startswith("ce_") for name in names)


async def test_a_replay_writes_the_same_records_as_the_live_processor(
    processor_env: dict[str, str],
) -> None:
    """Replayed events carry the live events' key, value and CloudEvents headers, byte for byte."""
    bootstrap = processor_env["KAFKA_BOOTSTRAP_SERVERS"]
    samples = [body for _, body in all_valid()]
    since = hours_ago_ms(1)
    settings = ProcessorSettings.from_environ(processor_env)
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    await produce(bootstrap, processor_env["KAFKA_TOPIC_RAW"], as_raw(samples, since))
    async with running_processor(processor_env):
        await wait_caught_up(processor_env)
    replayed_topic = processor_env["KAFKA_TOPIC_EVENTS"] + ".replayed"
    replayed = TopicSettings.from_environ({**processor_env, "KAFKA_TOPIC_EVENTS": replayed_topic})
    await ensure_topics(settings.kafka, [replayed.events], create_missing=True)
    await replay(
        settings,
        since_ms=since,
        until_ms=hours_ago_ms(0),
        output_topic=replayed_topic,
        chunk=10,
    )

    def written(records: list[ConsumerRecord[bytes, bytes]]) -> list[Any]:
        return sorted((r.key, r.value, list(r.headers)) for r in records)

    live = await read_all_committed(bootstrap, processor_env["KAFKA_TOPIC_EVENTS"])
    copied = await read_all_committed(bootstrap, replayed_topic)
    assert len(live) == len(samples)
    assert written(copied) == written(live)
