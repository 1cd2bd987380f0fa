"""The Kafka client's retry floods become one line, then one a minute with a count."""

from __future__ import annotations

import logging

from common.logthrottle import RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, None)


def test_a_flood_of_alike_lines_passes_once_then_once_an_interval_with_the_count() -> None:
    """During an outage on-call reads the error once, and later how often it recurred."""
    clock = Clock()
    throttle = RepeatThrottle(interval_s=60, clock=clock)
    passed = []
    for second in range(150):  # twenty reconnect errors a second, for 150 s
        clock.now = float(second)
        for node in range(20):
            line = record("aiokafka", "Unable connect to node with id %s: %s", node % 3, "refused")
            if throttle.filter(line):
                passed.append(line)
    assert len(passed) == 3  # at 0 s, 60 s and 120 s
    assert not hasattr(passed[0], "fields")
    assert [line.fields["suppressed"] for line in passed[1:]] == [1199, 1199]  # type: ignore[attr-defined]
    assert "Unable connect to node with id 0: refused" in passed[1].getMessage()
    assert "1199 alike held back in 60 s" in passed[1].getMessage()


def test_different_kinds_and_our_own_loggers_are_not_held_back() -> None:
    """A new kind of trouble shows at once, and the services' own lines are never throttled."""
    throttle = RepeatThrottle(clock=Clock())
    assert throttle.filter(record("aiokafka", "Unable connect to node %s", 1))
    assert throttle.filter(record("aiokafka.consumer.fetcher", "Unable connect to node %s", 1))
    assert throttle.filter(record("aiokafka", "Unable connect to node %s", 1, level=logging.ERROR))
    assert throttle.filter(record("aiokafka", "Metadata refresh failed"))
    assert not throttle.filter(record("aiokafka", "Unable connect to node %s", 2))
    for _ in range(5):
        assert throttle.filter(record("ingest", "postback refused: %s", "kafka_error"))


def test_the_table_of_kinds_stays_bounded() -> None:
    """Pre-formatted messages (a new template each) cannot grow memory without bound."""
    throttle = RepeatThrottle(clock=Clock())
    for n in range(5000):
        throttle.filter(record("aiokafka", f"one-off message {n}"))
    assert len(throttle._kinds) <= 1000
