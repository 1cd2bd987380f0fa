"""A journey printed for a person (a table) or a script (JSON): every attempt with what the
processor did, the events, the dead letters, and what was read."""

from __future__ import annotations

import orjson

from consumers.trace.find import Journey, Query
from consumers.trace.journey import Attempt, DeadLetterFound, EventFound, Step
from consumers.trace.reader import Span
from consumers.trace.render import as_dict, as_table

RAW, EVENTS, DLQ = "postbacks.raw", "postbacks.events", "postbacks.dlq"
ID = "4eaa5e6188069e71eddf63b3ab22ad12"


def attempt(offset: int, request_id: str, event_id: str | None = ID) -> Attempt:
    return Attempt(
        partition=4,
        offset=offset,
        received_at_ms=1_709_648_570_000 + offset,
        source="mt",
        client="203.0.113.5",
        request_id=request_id,
        event_id=event_id,
        unparseable=None if event_id else "invalid_json",
        event_key="U01" if event_id else None,
        digest=b"d",
    )


def journey() -> Journey:
    event = EventFound(4, 77, ID, "U01", "N202", "delivered", True, (RAW, 4, 981))
    letter = DeadLetterFound(
        4, 12, "invalid_json", "unexpected end", (RAW, 4, 990), 1_709_648_600_000
    )
    return Journey(
        query=Query(tracking_id="U01"),
        since_ms=1_709_000_000_000,
        until_ms=1_710_000_000_000,
        group_id="postback-processor",
        key="U01",
        raw_partition=4,
        committed=995,
        steps=[
            Step(attempt(981, "req-1"), "event", events=(event,)),
            Step(attempt(985, "req-2"), "duplicate", repeats=981),
            Step(attempt(990, "req-3", None), "dead_letter", dead_letters=(letter,)),
            Step(attempt(996, "req-4"), "not_processed", repeats=981),
        ],
        events=[event],
        dead_letters=[letter],
        read=[Span(RAW, 4, 900, 1000), Span(EVENTS, 4, 50, 80), Span(DLQ, 4, 10, 13)],
    )


def test_the_table_tells_each_attempts_fate_in_words() -> None:
    """One row per attempt, in order: its event, which offset it duplicates, its dead letter
    and why, or that the processor has not got to it; then events, dead letters, reads."""
    table = as_table(journey(), (RAW, EVENTS, DLQ))
    lines = table.splitlines()

    assert (
        lines[0] == "tracking id U01, received 2024-02-27T02:13:20.000Z to 2024-03-09T16:00:00.000Z"
    )
    rows = [line for line in lines if line.startswith(("981", "985", "990", "996"))]
    assert [row.split()[0] for row in rows] == ["981", "985", "990", "996"]
    assert "2024-03-05T14:22:50.981Z  mt" in rows[0]
    assert rows[0].endswith(f"event {ID} (events 4@77)")
    assert rows[1].endswith("duplicate of offset 981, dropped")
    assert rows[2].endswith("dead letter: invalid_json (dlq 4@12)")
    assert rows[3].endswith("not processed yet (group postback-processor is at offset 995)")
    assert any(line.split()[:3] == ["4", "77", ID] for line in lines)
    assert any(line.split()[:3] == ["4", "12", "invalid_json"] for line in lines)
    assert "  postbacks.raw 4: 900 to 1000" in lines


def test_the_json_document_holds_the_same_facts() -> None:
    """A script gets outcome, the offset a duplicate repeats, outputs and reads as data."""
    document = orjson.loads(orjson.dumps(as_dict(journey())))

    assert [item["outcome"] for item in document["received"]] == [
        "event",
        "duplicate",
        "dead_letter",
        "not_processed",
    ]
    assert document["received"][1]["duplicate_of"] == 981
    assert document["received"][0]["events"] == [[4, 77]]
    assert document["events"][0]["lineage"] == "postbacks.raw:4:981"
    assert document["dead_letters"][0]["source"] == "postbacks.raw:4:990"
    assert document["read"][0] == {"topic": RAW, "partition": 4, "from": 900, "to": 1000}
    assert document["committed_offset"] == 995


def test_an_empty_journey_says_so() -> None:
    """Nothing found reads as nothing found, not as an empty table."""
    empty = Journey(Query(tracking_id="NOPE"), 0, 1, "postback-processor")

    table = as_table(empty, (RAW, EVENTS, DLQ))

    assert "  nothing in this range" in table.splitlines()
    assert not empty.found
