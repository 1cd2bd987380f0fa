"""What happened to one message, from the records Kafka holds for it. Pure: no I/O.

The raw records are the attempts (the first postback and every provider retry the edge
stored). What the processor did with each is read from its outputs where it left some: an
event's `lineage` and a dead letter's `dlq-source-*` headers name the raw offset they came
from. A record that left neither was dropped as a duplicate; which earlier offset it repeats is
judged with the processor's own `parse` and `Identity`, as `simulator/check.py` judges events.
A record at or after the processor group's committed offset has not been processed yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from common import raw_record
from consumers import dlq
from consumers.processor.enrich import leg_facts
from consumers.processor.identity import Identity, digest_raw, event_id
from consumers.processor.parse import Notification, Unparseable, parse

# Where a record sits: (topic, partition, offset).
Coordinates = tuple[str, int, int]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def _number(value: bytes | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One raw record of the message: the edge's facts, and what the processor makes of it."""

    partition: int
    offset: int
    received_at_ms: int  # the edge's `received-at` header, else the record's timestamp
    source: str | None
    client: str | None
    request_id: str | None
    # None when the body cannot become an event; `unparseable` then holds the parser's reason.
    event_id: str | None
    unparseable: str | None
    # The key its event gets (the tracking id, else the event id): where to look for it.
    event_key: str | None
    # The processor's dedupe identity: equal digests are one notification.
    digest: bytes


def attempt(
    value: bytes,
    partition: int,
    offset: int,
    headers: raw_record.Headers,
    timestamp_ms: int,
    identity: Identity,
) -> Attempt:
    facts = raw_record.header_map(headers)
    id_: str | None = None
    reason: str | None = None
    event_key: str | None = None
    try:
        notification = parse(value, _text(facts.get(raw_record.CONTENT_TYPE)))
    except Unparseable as error:
        reason, digest = error.reason, digest_raw(value)
    else:
        digest = identity.digest(notification)
        id_ = event_id(digest)
        event_key = _tracking_id(notification) or id_
    received_at = _number(facts.get(raw_record.RECEIVED_AT))
    return Attempt(
        partition=partition,
        offset=offset,
        received_at_ms=received_at if received_at is not None else timestamp_ms,
        source=_text(facts.get(raw_record.SOURCE)),
        client=_text(facts.get(raw_record.CLIENT_ADDR)),
        request_id=_text(facts.get(raw_record.REQUEST_ID)),
        event_id=id_,
        unparseable=reason,
        event_key=event_key,
        digest=digest,
    )


def _tracking_id(notification: Notification) -> str | None:
    """The event's `tracking_id`, as enrichment derives it."""
    try:
        return leg_facts(notification, None).tracking_id
    except Exception:  # noqa: BLE001 - enrichment fails too: the processor dead-letters it
        return None


@dataclass(frozen=True, slots=True)
class EventFound:
    """An event on the events topic, and the raw record it was made from."""

    partition: int
    offset: int
    event_id: str | None
    tracking_id: str | None
    code: str | None
    status: str | None
    is_final: bool | None
    lineage: Coordinates | None


def event_found(value: bytes | None, partition: int, offset: int) -> EventFound | None:
    """The event in a record's value; None when the value is not an event object."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    lineage = event.get("lineage")
    coordinates = None
    if isinstance(lineage, dict):
        topic, part, off = lineage.get("topic"), lineage.get("partition"), lineage.get("offset")
        if isinstance(topic, str) and isinstance(part, int) and isinstance(off, int):
            coordinates = (topic, part, off)

    def text(name: str) -> str | None:
        found = event.get(name)
        return found if isinstance(found, str) else None

    final = event.get("is_final")
    return EventFound(
        partition=partition,
        offset=offset,
        event_id=text("event_id"),
        tracking_id=text("tracking_id"),
        code=text("code"),
        status=text("status"),
        is_final=final if isinstance(final, bool) else None,
        lineage=coordinates,
    )


@dataclass(frozen=True, slots=True)
class DeadLetterFound:
    """A dead letter, with the reason the processor gave and the raw record it came from."""

    partition: int
    offset: int
    reason: str | None
    detail: str | None
    source: Coordinates | None
    failed_at_ms: int | None


def dead_letter_found(headers: raw_record.Headers, partition: int, offset: int) -> DeadLetterFound:
    facts = raw_record.header_map(headers)
    topic = _text(facts.get(dlq.SOURCE_TOPIC))
    source_partition = _number(facts.get(dlq.SOURCE_PARTITION))
    source_offset = _number(facts.get(dlq.SOURCE_OFFSET))
    source = None
    if topic is not None and source_partition is not None and source_offset is not None:
        source = (topic, source_partition, source_offset)
    return DeadLetterFound(
        partition=partition,
        offset=offset,
        reason=_text(facts.get(dlq.REASON)),
        detail=_text(facts.get(dlq.DETAIL)),
        source=source,
        failed_at_ms=_number(facts.get(dlq.FAILED_AT)),
    )


Outcome = Literal["event", "dead_letter", "duplicate", "not_processed", "nothing_found"]


@dataclass(frozen=True, slots=True)
class Step:
    """What became of one attempt.

    - `event` / `dead_letter`: the outputs whose lineage or source names this raw offset;
    - `duplicate`: processed, no output, and the same notification as the earlier offset
      `duplicate_of` (the processor's dedupe dropped it);
    - `not_processed`: at or after the processor group's committed offset;
    - `nothing_found`: processed, no output in the range read and no earlier attempt in it
      that it repeats: a retry of one received before the range, or output written after it.

    `repeats` is the earlier offset of the same notification whenever there is one: beside an
    event it means the notification was emitted twice (the dedupe window had forgotten it).
    """

    attempt: Attempt
    outcome: Outcome
    events: tuple[EventFound, ...] = ()
    dead_letters: tuple[DeadLetterFound, ...] = ()
    repeats: int | None = None


def judge(
    attempts: Iterable[Attempt],
    events: Sequence[EventFound],
    dead_letters: Sequence[DeadLetterFound],
    *,
    raw_topic: str,
    committed: int | None,
) -> list[Step]:
    """One step per attempt, in offset order. `committed` is the processor group's committed
    offset on the attempts' partition (None: the group has none, so nothing was processed)."""
    first_of: dict[bytes, int] = {}
    steps = []
    for each in sorted(attempts, key=lambda item: item.offset):
        here = (raw_topic, each.partition, each.offset)
        made = tuple(event for event in events if event.lineage == here)
        failed = tuple(letter for letter in dead_letters if letter.source == here)
        repeats = first_of.setdefault(each.digest, each.offset)
        earlier = repeats if repeats != each.offset else None
        outcome: Outcome
        if made:
            outcome = "event"
        elif failed:
            outcome = "dead_letter"
        elif committed is None or each.offset >= committed:
            outcome = "not_processed"
        elif earlier is not None:
            outcome = "duplicate"
        else:
            outcome = "nothing_found"
        steps.append(Step(each, outcome, made, failed, earlier))
    return steps
