"""Service logs: JSON lines that never carry a Kafka record's contents, even at DEBUG."""

from __future__ import annotations

import logging

import pytest

from common.logs import configure_logging


def test_the_kafka_producers_record_values_never_reach_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiokafka logs each value it sends at DEBUG; a postback's value holds a subscriber's number
    and text, so that line is dropped while the client's other debug lines stay."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG")
    try:
        producer = logging.getLogger("aiokafka.producer.producer")
        producer.debug("Sending (key=%s value=%s) to %s", b"k", b'{"from":"447700900461"}', "tp")
        producer.debug("Flushing accumulated records in producer.")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    output = capsys.readouterr().out
    assert "447700900461" not in output
    assert "Flushing accumulated records" in output
