"""Replay against a real broker: after the runbook's replay, every notification is still in the
events topic once, for read_committed readers and for the metrics service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from common.kafka import KafkaSettings
from common.partitioning import default_partition
from common.topics import TopicSettings, ensure_topics
from consumers.dlq import DeadLetterReason
from consumers.processor import pipeline
from consumers.processor.parse import Notification, Unparseable, parse
from consumers.replay import ChunkedWriter, ReplayFenced, replay, replay_transactional_id
from consumers.replay_sources import ReplayReport
from consumers.settings import ProcessorSettings
from ingest.keys import partition_key
from testkit.kafka_tools import produce, read_all_committed
from testkit.samples import all_malformed, load
from testkit.services import Service
from testkit.traffic import as_raw, delivery_reports, expected_event_ids, hours_ago_ms
from tests.integration.consumers.conftest import (
    running_processor,
    wait_caught_up,
    with_processor_settings,
)

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000
SINCH = load("v1/mms_mo_n401_sinch")
SINCH_ID = b"MMS_MO_iLnCRrL6"


def sinch_notifications(count: int, seed: int) -> list[bytes]:
    """Distinct MMS MO notifications in Sinch's XML dialect (`<postback>`, v2 names)."""
    assert SINCH.count(SINCH_ID) == 1
    return [SINCH.replace(SINCH_ID, f"SINCH{seed:02d}x{n:04d}".encode()) for n in range(count)]


def parser_before_sinch(body: bytes, content_type: str | None = None) -> Notification:
    """The parser as a release that did not know Sinch's dialect would have it: a `<postback>`
    root is unknown, so the live processor dead-letters those notifications."""
    if body.lstrip().startswith(b"<postback"):
        raise Unparseable(DeadLetterReason.UNKNOWN_ROOT, "root element <postback>")
    return parse(body, content_type)


MINUTE_MS = 60_000


def one_per_partition(partitions: int, seed: int) -> list[bytes]:
    """A delivery report keyed to each raw partition, so that every partition moves on."""
    chosen: dict[int, bytes] = {}
    for body in delivery_reports(20 * partitions, seed=seed):
        chosen.setdefault(default_partition(partition_key(body), partitions), body)
    assert len(chosen) == partitions
    return list(chosen.values())


@dataclass
class Incident:
    env: dict[str, str]
    since_ms: int  # the first postback's receive time
    expected: set[str]  # the event id of every distinct notification sent
    dead: dict[str, bytes]  # the dead-lettered notifications by event id
    missing: set[str] = field(default_factory=set)  # those of them no event carries yet

    @property
    def bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP_SERVERS"]

    async def events(self) -> list[str]:
        """The event ids a read_committed reader of the live events topic sees, in order."""
        records = await read_all_committed(self.bootstrap, self.env["KAFKA_TOPIC_EVENTS"])
        return [orjson.loads(record.value)["event_id"] for record in records]

    async def receive(self, bodies: list[bytes], minutes_after_since: int) -> None:
        """Postbacks received that long after the incident began, handled by the processor."""
        await produce(
            self.bootstrap,
            self.env["KAFKA_TOPIC_RAW"],
            as_raw(bodies, self.since_ms + minutes_after_since * MINUTE_MS),
        )
        await wait_caught_up(self.env)
        self.expected |= expected_event_ids(bodies)

    async def settle(self) -> None:
        """Traffic in every partition 40 minutes on: the provider's retries are over."""
        await self.receive(one_per_partition(int(self.env["KAFKA_TOPIC_PARTITIONS"]), 43), 40)


@contextlib.asynccontextmanager
async def dead_letter_incident(
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    sinch: int = 8,
    settled: bool = True,
) -> AsyncIterator[Incident]:
    """A dead-letter incident and its fix, with the fixed processor still running.

    A processor whose parser refused Sinch's dialect dead-letters such notifications (and a
    provider retry of some); then the fix is released: the processor restarts with today's
    parser and sees more traffic, 10 minutes on: retries of dead-lettered notifications
    (which it emits, its restored window knowing the dead letters by their bytes only) and new
    Sinch notifications. With `settled`, traffic 40 minutes on ends the provider's retries.
    """
    env = with_processor_settings(base_env)
    settings = ProcessorSettings.from_environ(env)
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    bootstrap, raw = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_RAW"]
    since = hours_ago_ms(1)
    sinch_bodies = sinch_notifications(sinch, seed=1)
    dead, retried_after_fix, new = (
        sinch_bodies[: sinch // 2],
        sinch_bodies[: sinch // 4],
        sinch_bodies[sinch // 2 :],
    )
    before = delivery_reports(30, seed=41) + dead + dead[:2]
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "parse", parser_before_sinch)
        async with running_processor(env):
            await produce(bootstrap, raw, as_raw(before, since))
            await wait_caught_up(env)
    dead_letters = await read_all_committed(bootstrap, env["KAFKA_TOPIC_DLQ"])
    assert len(dead_letters) == len(dead), "the incident did not happen"
    incident = Incident(
        env,
        since,
        expected_event_ids(before),
        {event_id: body for body in dead for event_id in expected_event_ids([body])},
    )
    async with running_processor(env):
        await incident.receive(delivery_reports(30, seed=42) + retried_after_fix + new, 10)
        if settled:
            await incident.settle()
        emitted = set(await incident.events())
        incident.missing = incident.expected - emitted
        assert emitted <= incident.expected
        assert incident.missing, "every dead-lettered notification got through live"
        assert incident.missing <= set(incident.dead)
        yield incident


async def run_replay(env: dict[str, str], *args: str) -> tuple[int, dict[str, object], bytes]:
    """`python -m consumers.replay ARGS`: its exit status, JSON summary and standard error."""
    process = await start_replay(env, *args)
    output, errors = await process.communicate()
    assert process.returncode is not None
    lines = output.splitlines()
    return process.returncode, orjson.loads(lines[-1]) if lines else {}, errors


async def start_replay(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumers.replay",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


def exactly_once(event_ids: list[str], expected: set[str]) -> None:
    repeated = {event_id: n for event_id, n in Counter(event_ids).items() if n > 1}
    assert repeated == {}, f"{len(repeated)} notifications have more than one event"
    assert set(event_ids) == expected


async def test_following_the_runbook_after_a_dead_letter_incident_keeps_events_exactly_once(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostbackDeadLetters' action (fix, release, replay the range) adds the dead-lettered
    notifications to the live events topic and nothing else: each notification once there
    and in the metrics service's counts, however often the replay is run."""
    async with dead_letter_incident(base_env, monkeypatch) as incident:
        env = incident.env
        metrics = Service(
            "metrics",
            {
                **env,
                "METRICS_GROUP_ID": f"metrics-{uuid.uuid4().hex[:8]}",
                "METRICS_AUTO_OFFSET_RESET": "earliest",
            },
            tmp_path,
        )
        await metrics.start()
        try:
            status, summary, errors = await run_replay(env, "--since", iso(incident.since_ms))
            assert status == 0, errors.decode()
            again, summary_again, _ = await run_replay(env, "--since", iso(incident.since_ms))
            event_ids = await incident.events()

            async def counted_every_event() -> bool:
                consumed = await metrics.metric("postback_events_consumed_total")
                return consumed >= len(event_ids)

            await eventually(counted_every_event, "the metrics service read every event")
            counted = await metrics.metric("postback_events_total")
        finally:
            await metrics.stop()
    exactly_once(event_ids, incident.expected)
    assert counted == len(incident.expected)
    assert summary["events_written"] == len(incident.missing)
    assert (again, summary_again["events_written"]) == (0, 0)


async def test_a_copy_arriving_after_the_replay_does_not_become_a_second_event(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead letter is replayed only once the provider can send no more copies of its
    notification: a replay run while it still can leaves it for later, the copy that comes
    is emitted live, and the replay run after that adds only the rest."""
    async with dead_letter_incident(base_env, monkeypatch, settled=False) as incident:
        since = iso(incident.since_ms)
        early, early_summary, errors = await run_replay(incident.env, "--since", since)
        assert early == 0, errors.decode()
        late_copy = sorted(incident.missing)[0]
        await incident.receive([incident.dead[late_copy]], 20)
        await incident.settle()
        status, summary, errors = await run_replay(incident.env, "--since", since)
        event_ids = await incident.events()
    exactly_once(event_ids, incident.expected)
    assert status == 0, errors.decode()
    assert early_summary["events_written"] == 0
    assert early_summary["dead_letters_left_for_later"] == len(incident.dead)
    assert summary["events_written"] == len(incident.missing) - 1


async def test_two_replays_at_once_fence_each_other_instead_of_doubling_events(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two on-call engineers replaying the same incident at once: the later replay fences the
    earlier (exit 3) or finds its work done; each notification is in the events topic once."""
    async with dead_letter_incident(base_env, monkeypatch) as incident:
        since = iso(incident.since_ms)
        results = await asyncio.gather(
            run_replay(incident.env, "--since", since, "--chunk", "1"),
            run_replay(incident.env, "--since", since, "--chunk", "1"),
        )
        event_ids = await incident.events()
    exactly_once(event_ids, incident.expected)
    statuses = sorted(status for status, _, _ in results)
    assert statuses in ([0, 0], [0, 3]), [errors.decode() for _, _, errors in results]
    for status, _, errors in results:
        assert status == 0 or b"another replay into this topic took over" in errors


async def test_a_replay_killed_part_way_and_run_again_adds_each_event_once(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay killed (kill -9) with some transactions committed and one open, then run
    again, leaves each notification once: the rerun aborts the open one and adds the rest."""
    async with dead_letter_incident(base_env, monkeypatch, sinch=240) as incident:
        since = iso(incident.since_ms)
        live = len(await incident.events())
        first = await start_replay(incident.env, "--since", since, "--chunk", "1")

        async def wrote_some() -> bool:
            return len(await incident.events()) > live

        await eventually(wrote_some, "the first replay committed an event")
        assert first.returncode is None, "the replay ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        await first.communicate()
        partly = await incident.events()
        status, summary, errors = await run_replay(incident.env, "--since", since)
        event_ids = await incident.events()
    exactly_once(event_ids, incident.expected)
    assert status == 0, errors.decode()
    assert live < len(partly) < len(incident.expected)
    assert summary["events_written"] == len(incident.expected) - len(partly)


async def test_a_writer_whose_transactional_id_another_replay_took_commits_nothing(
    base_env: dict[str, str],
) -> None:
    """Once a second replay claims the output topic's id, the first one's open transaction
    is aborted and its commit fails with ReplayFenced; only the second one's records count."""
    settings = ProcessorSettings.from_environ(with_processor_settings(base_env))
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    topic = settings.topics.events.name

    def writer() -> ChunkedWriter:
        producer = AIOKafkaProducer(
            **settings.kafka.client_options(),
            transactional_id=replay_transactional_id(settings, topic),
            enable_idempotence=True,
            acks="all",
        )
        return ChunkedWriter(producer, chunk=100)

    first, second = writer(), writer()
    try:
        await first.claim()
        await first.send(topic, b"first", b"key", [])
        await second.claim()
        with pytest.raises(ReplayFenced):
            await first.commit()
        await second.send(topic, b"second", b"key", [])
        await second.commit()
    finally:
        await first.stop()
        await second.stop()
    records = await read_all_committed(base_env["KAFKA_BOOTSTRAP_SERVERS"], topic)
    assert [record.value for record in records] == [b"second"]


async def test_rederiving_a_range_writes_each_notification_once_to_another_topic(
    base_env: dict[str, str],
) -> None:
    """Re-deriving (after an enrichment fix) writes one event per distinct notification of the
    range, with its live event id, to the topic given; retries of earlier notifications stay
    dropped, a second run adds nothing, and the live topics are left alone."""
    settings = ProcessorSettings.from_environ(with_processor_settings(base_env))
    bootstrap, raw = base_env["KAFKA_BOOTSTRAP_SERVERS"], settings.topics.raw.name
    await ensure_topics(settings.kafka, settings.topics.all(), create_missing=True)
    before = delivery_reports(50, seed=21)
    inside = delivery_reports(80, seed=22)
    malformed = [body for _, body in all_malformed()[:3]]
    since = hours_ago_ms(2)
    await produce(bootstrap, raw, as_raw(before, since - HOUR_MS))
    await produce(bootstrap, raw, as_raw(before[:10] + inside + inside[:8] + malformed, since))
    output = f"{settings.topics.events.name}.rederived"

    async def rederive() -> ReplayReport:
        return await replay(
            settings, since_ms=since, until_ms=hours_ago_ms(0), output_topic=output, chunk=25
        )

    report = await rederive()
    again = await rederive()
    assert report.restored == len(before)
    assert report.read == 10 + len(inside) + 8 + len(malformed)
    assert report.duplicates == 10 + 8
    assert sum(report.dead_letters.values()) == len(malformed)
    assert (report.events, again.events, again.present) == (len(inside), 0, len(inside))
    events = await read_all_committed(bootstrap, output)
    exactly_once(
        [orjson.loads(record.value)["event_id"] for record in events], expected_event_ids(inside)
    )
    assert await read_all_committed(bootstrap, settings.topics.events.name) == []
    assert await read_all_committed(bootstrap, settings.topics.dlq.name) == []


async def test_the_replay_command_reports_and_refuses_bad_input(base_env: dict[str, str]) -> None:
    """The command prints a JSON summary; a malformed --since, or re-deriving into the live
    events topic, is refused with status 2 and a message."""
    settings = TopicSettings.from_environ(base_env)
    await ensure_topics(KafkaSettings.from_environ(base_env), settings.all(), create_missing=True)
    status, summary, errors = await run_replay(
        base_env, "--since", "2026-01-01T00:00:00Z", "--dry-run"
    )
    assert status == 0, errors.decode()
    assert (summary["mode"], summary["records_read"]) == ("dead-letters", 0)
    status, _, errors = await run_replay(base_env, "--since", "yesterday")
    assert status == 2
    live = settings.events.name
    status, _, errors = await run_replay(base_env, "--since", "0", "--output-topic", live)
    assert status == 2
    assert b"is the live events topic" in errors
