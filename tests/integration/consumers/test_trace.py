"""The trace against a real broker and the real processor: every attempt of a message, what
the processor did with each, its events and dead letters, reading only the partitions its key
maps to."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient

from common.partitioning import default_partition
from common.topics import ensure_topics
from consumers.processor.identity import Identity, event_id
from consumers.processor.parse import parse
from consumers.settings import ProcessorSettings
from consumers.trace.cli import run_trace
from consumers.trace.find import Journey, Query
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.kafka_tools import produce, topic_size
from testkit.samples import load
from testkit.traffic import as_raw, delivery_reports, hours_ago_ms
from tests.integration.consumers.conftest import (
    running_processor,
    wait_caught_up,
    with_processor_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio(loop_scope="module")]

MINUTE_MS = 60_000


def notification(tracking_id: str, code: str, status: str) -> bytes:
    return orjson.dumps(
        {
            "origin": "SMS_MT",
            "code": code,
            "status": status,
            "to": "14155550123",
            "tracking-id": tracking_id,
            "timestamp": "2024-03-05T14:22:47+00:00",
        }
    )


def id_of(body: bytes, content_type: str = "application/json") -> str:
    """The event id the processor gives a body."""
    return event_id(Identity().digest(parse(body, content_type)))


@dataclass(frozen=True)
class Scenario:
    env: dict[str, str]
    settings: ProcessorSettings
    retried: str  # sent, final, two retries of the final, one more retry not processed yet
    malformed: str  # a body without a code, and its retry
    untracked_event_id: str  # the event of a body without a tracking id
    since_ms: int
    until_ms: int

    async def trace(self, query: Query) -> Journey:
        journey, _ = await run_trace(self.settings, query, self.since_ms, self.until_ms)
        return journey


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scenario(kafka_bootstrap: str) -> AsyncIterator[Scenario]:
    """Three messages among background traffic in every partition, processed by the real
    processor; then one more retry it has not processed yet."""
    run = uuid.uuid4().hex[:8]
    prefix = f"test.trace.{run}"
    env = with_processor_settings(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TOPIC_PARTITIONS": "3",
            "KAFKA_TOPIC_RAW": f"{prefix}.raw",
            "KAFKA_TOPIC_EVENTS": f"{prefix}.events",
            "KAFKA_TOPIC_DLQ": f"{prefix}.dlq",
            "KAFKA_TOPIC_STATE": f"{prefix}.state",
            "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
        }
    )
    settings = ProcessorSettings.from_environ(env)
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    malformed = f"TRACE-B-{run}"
    # A message whose final event id hashes to another events partition than its tracking
    # id, so that tracing by that event id has to look beyond the id's own partition.
    for n in range(100):
        retried = f"TRACE-A-{run}-{n}"
        final = notification(retried, "N202", "Delivered")
        if default_partition(retried.encode(), 3) != default_partition(id_of(final).encode(), 3):
            break
    sent = notification(retried, "N201", "Sent")
    bad = orjson.dumps({"origin": "SMS_MT", "tracking-id": malformed})
    untracked = load("v1/sub_n301")
    start = hours_ago_ms(1)
    raw = env["KAFKA_TOPIC_RAW"]
    await produce(kafka_bootstrap, raw, as_raw(delivery_reports(60, seed=31), start))
    await produce(kafka_bootstrap, raw, as_raw([sent, final], start + MINUTE_MS, MINUTE_MS))
    await produce(kafka_bootstrap, raw, as_raw([final, final], start + 10 * MINUTE_MS, MINUTE_MS))
    await produce(kafka_bootstrap, raw, as_raw([bad, bad, untracked], start + 20 * MINUTE_MS))
    async with running_processor(env):
        await wait_caught_up(env)
    await produce(kafka_bootstrap, raw, as_raw([final], hours_ago_ms(0)))
    untracked_id = id_of(untracked, "text/xml")
    yield Scenario(
        env, settings, retried, malformed, untracked_id, hours_ago_ms(2), hours_ago_ms(-0.1)
    )


async def test_a_notification_with_retries_shows_each_attempt_and_one_event_each(
    scenario: Scenario,
) -> None:
    """Sent and final each became one event; the final's retries are duplicates of its first
    offset; the retry that came after the processor stopped is not processed yet."""
    journey = await scenario.trace(Query(tracking_id=scenario.retried))

    outcomes = [step.outcome for step in journey.steps]
    assert outcomes == ["event", "event", "duplicate", "duplicate", "not_processed"]
    sent, final, *retries = journey.steps
    assert [retry.repeats for retry in retries] == [final.attempt.offset] * 3
    assert [step.attempt.request_id for step in journey.steps] == [
        "req-0",
        "req-1",
        "req-0",
        "req-1",
        "req-0",
    ]
    assert all(step.attempt.client == "203.0.113.5" for step in journey.steps)
    assert len(journey.events) == 2
    assert [event.lineage for event in journey.events] == [
        (scenario.settings.topics.raw.name, journey.raw_partition, sent.attempt.offset),
        (scenario.settings.topics.raw.name, journey.raw_partition, final.attempt.offset),
    ]
    assert [event.status for event in journey.events] == ["sent", "delivered"]
    assert sent.events[0].event_id == sent.attempt.event_id
    assert journey.committed == retries[-1].attempt.offset
    assert journey.dead_letters == []


async def test_a_dead_letter_shows_its_reason_and_its_retry_as_a_duplicate(
    scenario: Scenario,
) -> None:
    """A body that cannot become an event is dead-lettered once, with the parser's reason;
    its retry is dropped as a duplicate of it."""
    journey = await scenario.trace(Query(tracking_id=scenario.malformed))

    first, retry = journey.steps
    assert first.outcome == "dead_letter"
    assert first.attempt.unparseable == "missing_code"
    (letter,) = journey.dead_letters
    assert letter.reason == "missing_code"
    assert letter.source == (
        scenario.settings.topics.raw.name,
        journey.raw_partition,
        first.attempt.offset,
    )
    assert (retry.outcome, retry.repeats) == ("duplicate", first.attempt.offset)
    assert journey.events == []


async def test_an_unknown_tracking_id_finds_nothing(scenario: Scenario) -> None:
    """An id the edge never stored gives an empty journey, not an error."""
    journey = await scenario.trace(Query(tracking_id=f"NOPE-{uuid.uuid4().hex}"))

    assert not journey.found
    assert journey.steps == []


async def test_only_the_partitions_the_key_maps_to_are_read(scenario: Scenario) -> None:
    """With traffic in every partition, a tracking id's trace reads one partition of each
    topic: the one Kafka's default partitioner gives the key."""
    journey = await scenario.trace(Query(tracking_id=scenario.retried))

    topics = scenario.settings.topics
    key = scenario.retried.encode()
    assert {(span.topic, span.partition) for span in journey.read} == {
        (topics.raw.name, default_partition(key, 3)),
        (topics.events.name, default_partition(key, 3)),
        (topics.dlq.name, default_partition(key, 3)),
    }
    assert len(journey.read) == 3
    raw_span = next(span for span in journey.read if span.topic == topics.raw.name)
    assert raw_span.stop - raw_span.start > len(journey.steps), "other keys share the partition"


async def test_a_trace_writes_nothing_and_joins_no_group(scenario: Scenario) -> None:
    """Safe against production: no topic grows, no consumer group appears."""
    bootstrap = scenario.env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = [spec.name for spec in scenario.settings.topics.all()]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        groups_before = await admin.list_consumer_groups()
        sizes_before = [await topic_size(bootstrap, topic) for topic in topics]

        await scenario.trace(Query(tracking_id=scenario.retried))
        await scenario.trace(Query(event_id=scenario.untracked_event_id))

        assert await admin.list_consumer_groups() == groups_before
        assert [await topic_size(bootstrap, topic) for topic in topics] == sizes_before
    finally:
        await admin.close()


async def test_an_event_id_or_raw_coordinates_lead_to_the_same_journey(
    scenario: Scenario,
) -> None:
    """From an event id (scanning the events partitions, and saying so) or from a raw
    record's coordinates, the trace finds the message and tells the same story."""
    by_tracking_id = await scenario.trace(Query(tracking_id=scenario.retried))
    final = by_tracking_id.steps[1]
    assert final.attempt.event_id is not None

    by_event_id = await scenario.trace(Query(event_id=final.attempt.event_id))
    by_offset = await scenario.trace(
        Query(
            raw=(scenario.settings.topics.raw.name, final.attempt.partition, final.attempt.offset)
        )
    )

    assert by_event_id.steps == by_tracking_id.steps
    assert by_offset.steps == by_tracking_id.steps
    assert any("all 3 partitions were read" in note for note in by_event_id.notes)
    assert by_offset.notes == []


async def test_an_event_without_tracking_id_is_found_in_its_own_partition(
    scenario: Scenario,
) -> None:
    """An event keyed by its event id sits where that id hashes to: one partition is read,
    and the raw record is found through the event's lineage."""
    journey = await scenario.trace(Query(event_id=scenario.untracked_event_id))

    (step,) = journey.steps
    assert step.outcome == "event"
    assert step.events[0].event_id == scenario.untracked_event_id
    assert step.events[0].tracking_id is None
    assert journey.notes == []
    events_spans = [s for s in journey.read if s.topic == scenario.settings.topics.events.name]
    assert {span.partition for span in events_spans} == {
        default_partition(scenario.untracked_event_id.encode(), 3)
    }


async def _command(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers.trace",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_command_prints_a_table_or_json_and_says_when_nothing_is_found(
    scenario: Scenario,
) -> None:
    """Status 0 with a table (or --json) when something is found, 1 when nothing is, 2 for a
    bad range, each in one line on stderr."""
    since = str(scenario.since_ms)
    status, table, _ = await _command(scenario.env, scenario.retried, "--since", since)
    assert status == 0
    assert "duplicate of offset" in table
    assert "not processed yet" in table

    status, document, _ = await _command(scenario.env, scenario.malformed, "--json")
    assert status == 0
    parsed = orjson.loads(document)
    assert [item["outcome"] for item in parsed["received"]] == ["dead_letter", "duplicate"]
    assert parsed["dead_letters"][0]["reason"] == "missing_code"

    status, _, _ = await _command(scenario.env, "NOPE-" + uuid.uuid4().hex)
    assert status == 1

    status, out, err = await _command(scenario.env, scenario.retried, "--since", "yesterday")
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1


async def test_raw_coordinates_outside_the_range_say_so(scenario: Scenario) -> None:
    """A record named by its coordinates but received outside --since/--until is not silently
    missing from the answer: the trace says where to look."""
    found = await scenario.trace(Query(tracking_id=scenario.retried))
    first = found.steps[0].attempt
    at = (scenario.settings.topics.raw.name, first.partition, first.offset)

    journey, _ = await run_trace(
        scenario.settings, Query(raw=at), first.received_at_ms + 1, scenario.until_ms
    )

    assert journey.steps[0].attempt.offset != first.offset
    assert any("was received outside the range" in note for note in journey.notes)
