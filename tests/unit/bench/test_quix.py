"""B7's input and the quixstreams side's per-record step, without Kafka or quixstreams."""

from __future__ import annotations

from typing import Any

import orjson

from bench.quix import raw_records
from bench.quix_job import dedupe

HEADERS = [("received-at", b"1733580000000"), ("source", b"mt")]


class DictState:
    """What a quixstreams State does for the step: values by key."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: Any, value: Any) -> None:
        self.values[key] = value


def test_a_json_notification_is_emitted_once_with_three_fields_added() -> None:
    """The first copy comes out with event_id, received_at and source; a retry of the same
    notification, even with its keys in another order, is dropped."""
    state = DictState()
    body = b'{"origin":"SMS_MT","code":"N202","tracking-id":"T1"}'
    retry = b'{"tracking-id":"T1", "code":"N202", "origin":"SMS_MT"}'

    emitted = dedupe(body, b"T1", 0, HEADERS, state)

    assert emitted is not None
    event = orjson.loads(emitted)
    assert event.items() >= orjson.loads(body).items()
    assert event["received_at"] == 1733580000000
    assert event["source"] == "mt"
    assert len(event["event_id"]) == 32
    assert dedupe(retry, b"T1", 0, HEADERS, state) is None


def test_other_bodies_pass_unchanged_once_per_distinct_bytes() -> None:
    """v1 XML and malformed bodies are deduped on their bytes and passed on as they are."""
    state = DictState()
    xml = b"<postback><TRACKINGID>T2</TRACKINGID></postback>"

    assert dedupe(xml, b"T2", 0, HEADERS, state) == xml
    assert dedupe(xml, b"T2", 0, HEADERS, state) is None
    assert dedupe(b"[1, 2]", b"k", 0, None, state) == b"[1, 2]"
    assert dedupe(xml + b" ", b"T2", 0, HEADERS, state) == xml + b" "


def test_the_input_has_the_count_asked_with_its_share_of_retries() -> None:
    """Exactly `count` records, as the edge writes them (keyed, with its headers); the copies
    beyond the distinct postbacks are the retries."""
    records = raw_records(1_100, seed=3, retry_ratio=0.1, xml_share=0.1, malformed_share=0.01)

    assert len(records) == 1_100
    postbacks = {value for _, value, _, _ in records}
    assert 990 <= len(postbacks) <= 1_000  # identical malformed bodies count once
    assert all(key for key, _, _, _ in records)
    assert {name for name, _ in records[0][2]} >= {"received-at", "source", "content-type"}
