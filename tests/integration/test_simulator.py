"""The provider simulator against the real edge and processor on a real broker."""

from __future__ import annotations

import io
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from common.deadline import Deadline
from common.kafka import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from simulator.check import CheckError, Expectation, _read_to_end, check_events
from simulator.cli import OK, run
from testkit.kafka_tools import produce, read_all_committed, topic_size
from tests.integration.consumers.conftest import running_processor, with_processor_settings
from tests.integration.ingest.conftest import running_edge

pytestmark = pytest.mark.kafka

COUNT = 150  # about 30 lost answers at P=0.2; a few seconds of sending


async def test_lost_answers_and_retries_still_give_exactly_one_event_per_notification(
    base_env: dict[str, str],
) -> None:
    """Provider traffic whose 200s get lost reaches the events topic once per notification."""
    env = with_processor_settings(base_env)
    bootstrap, events_topic = env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC_EVENTS"]
    out = io.StringIO()
    async with running_edge(env) as edge, running_processor(env):
        status = await run(
            [
                "--url", f"{edge.url}/postbacks/mt",
                "--count", str(COUNT),
                "--seed", "20240305",
                "--xml-share", "0.2",
                "--malformed-share", "0.05",
                "--drop-answers", "0.2",
                "--retry-delay", "0.5",
                "--answer-timeout", "5",
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
        )  # fmt: skip
        events = await read_all_committed(bootstrap, events_topic)
        raw_records = await topic_size(bootstrap, env["KAFKA_TOPIC_RAW"])
    report = orjson.loads(out.getvalue())
    check = report["check"]
    assert status == OK, report
    assert (report["acked"], report["given_up"], report["abandoned"]) == (COUNT, 0, 0)
    assert report["answers_dropped"] > 0  # acked postbacks really were sent again
    assert report["retried"] >= report["answers_dropped"]
    assert raw_records >= COUNT + report["answers_dropped"]  # every stored copy is in Kafka...
    well_formed = COUNT - report["wires"]["malformed"]
    assert check["passed"] is True
    assert (check["expected"], check["found"]) == (well_formed, well_formed)
    assert (check["missing"], check["duplicated"], check["malformed_as_events"]) == (0, 0, 0)
    assert check["dead_letters_expected"] == report["wires"]["malformed"] > 0
    # ...and, read independently of the simulator, the copies became no extra events.
    event_ids = [orjson.loads(record.value)["event_id"] for record in events]
    assert len(event_ids) == len(set(event_ids)) == well_formed


async def test_the_events_check_reports_missing_and_duplicated_events(
    base_env: dict[str, str],
) -> None:
    """The check fails loudly on a missing, a doubled or a malformed-body event; it can fail."""
    kafka = KafkaSettings.from_environ(base_env)
    topics = TopicSettings.from_environ(base_env)
    await ensure_topics(kafka, [topics.events], create_missing=True)
    values = [b'{"event_id":"a"}', b'{"event_id":"a"}', b'{"event_id":"b"}']
    values += [b'{"event_id":"other-traffic"}', b"not json"]
    values += [b'{"event_id":"e","tracking_id":"BAD1x3"}']  # a malformed body turned event
    await produce(
        kafka.bootstrap_servers, topics.events.name, [(None, v, [], None) for v in values]
    )
    wanted = Expectation(
        expected=frozenset({"a", "b", "c"}),
        unconfirmed=frozenset({"d"}),
        dead_letters=1,
        malformed_ids=frozenset({"BAD1x3"}),
    )
    since_ms = int(time.time() * 1000) - 60_000
    result = await check_events(
        kafka, topics.events.name, wanted, since_ms=since_ms, wait_s=1.0, settle_s=0.0
    )
    assert not result.passed
    assert (result.missing, result.duplicated) == (("c",), ("a",))
    assert (result.found, result.foreign, result.unreadable) == (2, 1, 1)
    assert result.malformed_events == 1
    with pytest.raises(CheckError, match="does not exist"):
        await check_events(
            kafka, topics.events.name + ".typo", wanted, since_ms=since_ms, wait_s=0.0
        )


async def test_the_events_check_counts_events_committed_while_it_reads(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event committed after the check took a partition's end offset, but fetched in the
    same pass, is counted: the check's position has moved past it, so no later pass would."""
    bootstrap, topic = base_env["KAFKA_BOOTSTRAP_SERVERS"], base_env["KAFKA_TOPIC_EVENTS"]
    ids = [f"{n:032x}" for n in range(3)]
    await ensure_topics(
        KafkaSettings.from_environ(base_env),
        TopicSettings.from_environ(base_env).all(),
        create_missing=True,
    )
    await produce(
        bootstrap, topic, [(b"k", orjson.dumps({"event_id": id_}), [], None) for id_ in ids]
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        count = int(base_env["KAFKA_TOPIC_PARTITIONS"])
        partitions = [TopicPartition(topic, partition) for partition in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)

        async def taken_before_the_last_commit(_: list[TopicPartition]) -> dict[Any, int]:
            return {tp: max(0, end - 1) for tp, end in ends.items()}  # the last one is new

        monkeypatch.setattr(consumer, "end_offsets", taken_before_the_last_commit)
        wanted = Expectation(frozenset(ids), frozenset(), 0)
        seen: Counter[str] = Counter()
        await _read_to_end(consumer, partitions, wanted, seen, Counter(), Deadline(10))
    finally:
        await consumer.stop()
    assert seen == Counter(ids)
