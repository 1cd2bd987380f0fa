"""What the publisher decides without a broker: when Kafka counts as down, for how long, and
that nothing is acknowledged before a producer exists. Writes to a real broker are in
tests/integration/ingest."""

from __future__ import annotations

import logging

import pytest

from common.kafka import KafkaSettings
from common.topics import TopicSettings
from ingest.publisher import KafkaHealth, KafkaPublisher, PublishError
from ingest.records import RawRecord


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_timed_from_its_first_failure(caplog: pytest.LogCaptureFixture) -> None:
    """The outage's length (what on-call needs first) runs from the first failed write or
    probe; more failures do not restart it; it is logged once when it starts and once when
    it ends."""
    caplog.set_level(logging.INFO, logger="ingest.publisher")
    clock = Clock()
    health = KafkaHealth(clock)

    assert (health.up, health.outage_seconds()) == (True, 0.0)
    health.failed()
    clock.now += 30
    health.failed()
    clock.now += 12.5
    assert (health.up, health.outage_seconds()) == (False, 42.5)
    health.succeeded()
    health.succeeded()

    assert (health.up, health.outage_seconds()) == (True, 0.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "Kafka is failing; answering 503 so the provider retries"),
        ("INFO", "Kafka is reachable again"),
    ]
    assert caplog.records[1].fields == {"outage_seconds": 42.5}  # type: ignore[attr-defined]


async def test_nothing_is_acknowledged_before_the_producer_started() -> None:
    """A postback that arrives before the producer connected is refused, never answered as if
    stored, and the edge does not report Kafka up."""
    settings = KafkaSettings.from_environ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    topics = TopicSettings.from_environ({})
    publisher = KafkaPublisher(settings, topics.raw)
    record = RawRecord(key=b"k", value=b"{}", headers=[], timestamp_ms=0)

    assert publisher.kafka_up is False
    with pytest.raises(PublishError, match="not started"):
        await publisher.publish(record)
    await publisher.stop(within_s=1)  # stopping what never started is a no-op
