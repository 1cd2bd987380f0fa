"""Judging a message's journey from its records: the processor's own identity decides what a
retry repeats, the outputs' lineage says what was made of each attempt."""

from __future__ import annotations

import orjson

from consumers import dlq
from consumers.dlq import dead_letter_headers
from consumers.processor.identity import Identity
from consumers.trace.journey import (
    Attempt,
    DeadLetterFound,
    EventFound,
    attempt,
    dead_letter_found,
    event_found,
    judge,
)
from ingest.records import build_record
from testkit.samples import load

RAW = "postbacks.raw"
FINAL = orjson.dumps({"origin": "SMS_MT", "code": "N202", "tracking-id": "T1", "to": "1415"})
SPACED = b'{ "tracking-id": "T1", "code": "N202", "origin": "SMS_MT", "to": "1415" }'
SENT = orjson.dumps({"origin": "SMS_MT", "code": "N201", "tracking-id": "T1", "to": "1415"})
BROKEN = b'{"origin": "SMS_MT", "tracking-id": "T1"'


def attempt_at(offset: int, body: bytes, received_at_ms: int = 1_000) -> Attempt:
    record = build_record(
        body,
        source="mt",
        received_at_ms=received_at_ms,
        client_addr="203.0.113.5",
        request_id=f"req-{offset}",
        content_type=b"application/json",
        user_agent=None,
    )
    return attempt(record.value, 4, offset, record.headers, 0, Identity())


def event_from(offset: int, made_from: Attempt) -> EventFound:
    return EventFound(
        partition=4,
        offset=offset,
        event_id=made_from.event_id,
        tracking_id="T1",
        code="N202",
        status="delivered",
        is_final=True,
        lineage=(RAW, made_from.partition, made_from.offset),
    )


def test_an_attempt_carries_the_edges_facts_and_the_processors_identity() -> None:
    """Receive time, source, client and request id from the edge's headers; the event id
    the processor gives the body, and the key its event gets."""
    made = attempt_at(7, FINAL, received_at_ms=1_700_000_000_123)

    assert made.received_at_ms == 1_700_000_000_123
    assert (made.source, made.client, made.request_id) == ("mt", "203.0.113.5", "req-7")
    assert made.event_id is not None
    assert len(made.event_id) == 32
    assert made.event_key == "T1"
    assert made.unparseable is None


def test_retries_that_differ_only_in_spacing_are_the_same_notification() -> None:
    """Identity is the processor's: canonical JSON, so key order and spaces do not count."""
    assert attempt_at(1, FINAL).digest == attempt_at(2, SPACED).digest
    assert attempt_at(1, FINAL).digest != attempt_at(2, SENT).digest


def test_a_body_without_tracking_id_keys_its_event_by_event_id() -> None:
    """Where the processor puts an event without a tracking id: under its event id."""
    made = attempt_at(1, load("v1/sub_n301"))

    assert made.event_key == made.event_id


def test_an_unparseable_body_says_why_and_has_no_event_id() -> None:
    """The parser's reason, as the dead letter will carry it."""
    made = attempt_at(1, BROKEN)

    assert (made.event_id, made.event_key, made.unparseable) == (None, None, "invalid_json")


def test_outputs_decide_and_identity_names_what_a_dropped_retry_repeats() -> None:
    """Event and dead letter come from the outputs' lineage; a processed attempt without
    output repeats the first one with its identity; offsets at or after the committed one are
    not processed yet; one repeating nothing in range is flagged as such."""
    first, retry, broken, broken_again, lonely, late = (
        attempt_at(10, FINAL),
        attempt_at(11, SPACED),
        attempt_at(12, BROKEN),
        attempt_at(13, BROKEN),
        attempt_at(14, SENT),
        attempt_at(20, FINAL),
    )
    letter = DeadLetterFound(4, 3, "invalid_json", "…", (RAW, 4, 12), 5)

    steps = judge(
        [late, lonely, broken_again, broken, retry, first],
        [event_from(100, first)],
        [letter],
        raw_topic=RAW,
        committed=15,
    )

    assert [(step.attempt.offset, step.outcome, step.repeats) for step in steps] == [
        (10, "event", None),
        (11, "duplicate", 10),
        (12, "dead_letter", None),
        (13, "duplicate", 12),
        (14, "nothing_found", None),
        (20, "not_processed", 10),
    ]
    assert steps[0].events[0].offset == 100
    assert steps[2].dead_letters == (letter,)


def test_an_event_made_from_a_retry_is_shown_as_emitted_again() -> None:
    """Two events for one notification (the window had forgotten it): the second attempt's
    step has its event and names the offset it repeats."""
    first, retry = attempt_at(10, FINAL), attempt_at(11, FINAL)

    steps = judge(
        [first, retry],
        [event_from(1, first), event_from(2, retry)],
        [],
        raw_topic=RAW,
        committed=12,
    )

    assert [(step.outcome, step.repeats) for step in steps] == [("event", None), ("event", 10)]


def test_without_a_committed_offset_nothing_counts_as_processed() -> None:
    """A group that never committed on the partition has processed none of it."""
    steps = judge([attempt_at(0, FINAL)], [], [], raw_topic=RAW, committed=None)

    assert steps[0].outcome == "not_processed"


def test_outputs_of_other_topics_or_partitions_do_not_count() -> None:
    """Lineage names topic, partition and offset; all three must match."""
    first = attempt_at(10, FINAL)
    elsewhere = EventFound(4, 1, first.event_id, "T1", "N202", "delivered", True, ("other", 4, 10))

    (step,) = judge([first], [elsewhere], [], raw_topic=RAW, committed=11)

    assert step.outcome == "nothing_found"


def test_events_and_dead_letters_are_read_from_their_records() -> None:
    """The event's id, status and lineage from its JSON; the dead letter's reason and source
    from the dlq-* headers the processor wrote."""
    value = orjson.dumps(
        {
            "event_id": "ab" * 16,
            "tracking_id": "T1",
            "code": "N202",
            "status": "delivered",
            "is_final": True,
            "lineage": {"topic": RAW, "partition": 4, "offset": 981},
        }
    )
    headers = dead_letter_headers(
        [("request-id", b"r")],
        reason="invalid_json",
        detail="unexpected end",
        topic=RAW,
        partition=4,
        offset=982,
        now_ms=77,
    )

    found = event_found(value, 2, 5)
    letter = dead_letter_found(headers, 1, 9)

    assert found == EventFound(2, 5, "ab" * 16, "T1", "N202", "delivered", True, (RAW, 4, 981))
    assert event_found(b"not json", 2, 6) is None
    assert letter == DeadLetterFound(1, 9, "invalid_json", "unexpected end", (RAW, 4, 982), 77)
    assert dead_letter_found([(dlq.REASON, b"x")], 1, 10).source is None
