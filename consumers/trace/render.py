"""A journey as a table for a person, or as a JSON document for a script. Pure.

Times are UTC, as in the events (`received_at`) and the provider's timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from consumers.trace.find import Journey
from consumers.trace.journey import Coordinates, Step


def utc(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _at(coordinates: Coordinates | None) -> str | None:
    return None if coordinates is None else "{}:{}:{}".format(*coordinates)


def what_happened(step: Step, group_id: str, committed: int | None) -> str:
    """The processor's part in one attempt, in words."""
    if step.outcome == "event":
        text = "; ".join(
            f"event {event.event_id} (events {event.partition}@{event.offset})"
            for event in step.events
        )
        if step.repeats is not None:
            text += f"; emitted again: the same notification as offset {step.repeats}"
        return text
    if step.outcome == "dead_letter":
        return "; ".join(
            f"dead letter: {letter.reason} (dlq {letter.partition}@{letter.offset})"
            for letter in step.dead_letters
        )
    if step.outcome == "duplicate":
        return f"duplicate of offset {step.repeats}, dropped"
    if step.outcome == "not_processed":
        if committed is None:
            return f"not processed yet (group {group_id} has no committed offset)"
        return f"not processed yet (group {group_id} is at offset {committed})"
    return (
        "processed, no output in the range read: a retry of one received before it, "
        "or written later (widen --since/--until)"
    )


def as_dict(journey: Journey) -> dict[str, Any]:
    return {
        "query": journey.query.describe(),
        "since": utc(journey.since_ms),
        "until": utc(journey.until_ms),
        "key": journey.key,
        "raw_partition": journey.raw_partition,
        "processor_group": journey.group_id,
        "committed_offset": journey.committed,
        "received": [
            {
                "partition": step.attempt.partition,
                "offset": step.attempt.offset,
                "received_at": utc(step.attempt.received_at_ms),
                "source": step.attempt.source,
                "client": step.attempt.client,
                "request_id": step.attempt.request_id,
                "event_id": step.attempt.event_id,
                "unparseable": step.attempt.unparseable,
                "outcome": step.outcome,
                "duplicate_of": step.repeats,
                "events": [[event.partition, event.offset] for event in step.events],
                "dead_letters": [[letter.partition, letter.offset] for letter in step.dead_letters],
                "what_happened": what_happened(step, journey.group_id, journey.committed),
            }
            for step in journey.steps
        ],
        "events": [
            {
                "partition": event.partition,
                "offset": event.offset,
                "event_id": event.event_id,
                "tracking_id": event.tracking_id,
                "code": event.code,
                "status": event.status,
                "is_final": event.is_final,
                "lineage": _at(event.lineage),
            }
            for event in journey.events
        ],
        "dead_letters": [
            {
                "partition": letter.partition,
                "offset": letter.offset,
                "reason": letter.reason,
                "detail": letter.detail,
                "source": _at(letter.source),
                "failed_at": utc(letter.failed_at_ms),
            }
            for letter in journey.dead_letters
        ],
        "read": [
            {"topic": span.topic, "partition": span.partition, "from": span.start, "to": span.stop}
            for span in journey.read
        ],
        "notes": journey.notes,
    }


# Per section of the table: its key in the JSON document, what to say when it is empty, and
# its columns as (heading, field).
SECTIONS: Final = (
    (
        "received",
        "nothing in this range",
        (
            ("offset", "offset"),
            ("received at", "received_at"),
            ("source", "source"),
            ("client", "client"),
            ("request id", "request_id"),
            ("what the processor did", "what_happened"),
        ),
    ),
    (
        "events",
        "none",
        (
            ("partition", "partition"),
            ("offset", "offset"),
            ("event id", "event_id"),
            ("code", "code"),
            ("status", "status"),
            ("final", "is_final"),
            ("from raw", "lineage"),
        ),
    ),
    (
        "dead_letters",
        "none",
        (
            ("partition", "partition"),
            ("offset", "offset"),
            ("reason", "reason"),
            ("from raw", "source"),
            ("failed at", "failed_at"),
            ("detail", "detail"),
        ),
    ),
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _columns(columns: Sequence[tuple[str, str]], items: Sequence[dict[str, Any]]) -> list[str]:
    cells = [[heading for heading, _ in columns]]
    cells += [[_cell(item[name]) for _, name in columns] for item in items]
    widths = [max(len(row[n]) for row in cells) for n in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def as_table(journey: Journey, topics: tuple[str, str, str]) -> str:
    doc = as_dict(journey)
    lines = [f"{doc['query']}, received {doc['since']} to {doc['until']}"]
    if journey.key is not None:
        committed = "none" if journey.committed is None else journey.committed
        lines.append(
            f"key {journey.key}: {topics[0]} partition {journey.raw_partition}; processor group "
            f"{journey.group_id} committed offset {committed}"
        )
    for (section, empty, columns), topic in zip(SECTIONS, topics, strict=True):
        lines += ["", f"{section.replace('_', ' ')} ({topic})"]
        items = doc[section]
        lines += _columns(columns, items) if items else [f"  {empty}"]
    lines += ["", "read (partition: offsets)"]
    lines += [
        f"  {span['topic']} {span['partition']}: {span['from']} to {span['to']}"
        for span in doc["read"]
    ]
    lines += [f"note: {note}" for note in journey.notes]
    return "\n".join(lines)
