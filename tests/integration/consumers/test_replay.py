"""Replay: events re-derived from the raw archive for a time range, judged like the live run."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter

import orjson
import pytest

from common.kafka import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from consumers.replay import replay
from consumers.settings import ProcessorSettings
from testkit.kafka_tools import produce, read_all_committed
from testkit.samples import all_malformed
from testkit.traffic import as_raw, delivery_reports, expected_event_ids, hours_ago_ms

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000


async def test_replay_emits_each_notification_of_the_range_once_with_its_live_event_id(
    base_env: dict[str, str],
) -> None:
    """A range replay writes one event per distinct notification received in the range, with
    the event id the live processor used; retries of earlier notifications stay dropped."""
    settings = ProcessorSettings.from_environ(base_env)
    bootstrap, raw = base_env["KAFKA_BOOTSTRAP_SERVERS"], settings.topics.raw.name
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    before = delivery_reports(50, seed=21)
    inside = delivery_reports(80, seed=22)
    malformed = [body for _, body in all_malformed()[:3]]
    since = hours_ago_ms(2)
    await produce(bootstrap, raw, as_raw(before, since - HOUR_MS))
    await produce(bootstrap, raw, as_raw(before[:10] + inside + inside[:8] + malformed, since))

    report = await replay(
        settings,
        since_ms=since,
        until_ms=hours_ago_ms(0),
        output_topic=settings.topics.events.name,
        dead_letters=False,
        chunk=25,
        dry_run=False,
    )
    assert report.warmed == len(before)
    assert report.read == 10 + len(inside) + 8 + len(malformed)
    assert report.duplicates == 10 + 8
    assert sum(report.dead_letters.values()) == len(malformed)
    events = await read_all_committed(bootstrap, settings.topics.events.name)
    ids = Counter(orjson.loads(record.value)["event_id"] for record in events)
    assert set(ids) == expected_event_ids(inside)
    assert max(ids.values()) == 1
    assert await read_all_committed(bootstrap, settings.topics.dlq.name) == []


async def test_the_replay_command_reports_and_refuses_bad_input(base_env: dict[str, str]) -> None:
    """The CLI prints a JSON summary; a malformed --since is refused with status 2."""
    settings = TopicSettings.from_environ(base_env)
    env = {**os.environ, **base_env}
    await ensure_topics(KafkaSettings.from_environ(base_env), settings.all(), create_missing=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers.replay",
        "--since",
        "2026-01-01T00:00:00Z",
        "--dry-run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0
    summary = orjson.loads(output.splitlines()[-1])
    assert summary["records_read"] == 0
    refused = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consumers.replay", "--since", "yesterday", env=env
    )
    assert await refused.wait() == 2
