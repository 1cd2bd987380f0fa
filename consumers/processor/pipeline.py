"""Everything done to one raw record, in order, for one partition of `postbacks.raw`.

    parse -> identify -> dedupe -> enrich -> join delivery latency -> privacy -> serialise

Each record ends in exactly one of three dispositions (`Disposition`): an event to emit, a
duplicate to drop, or a dead letter. Pure apart from the per-partition state it owns (the
dedupe window and the latency join), which follows the Kafka transaction: `commit()` once the
transaction carrying this batch's output committed, `abort()` if it did not. No Kafka client
is imported here; the runtime feeds records in and writes dispositions out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

import orjson

from common import raw_record
from consumers.dlq import DeadLetterReason
from consumers.events import cloudevents
from consumers.events.model import Status
from consumers.processor.enrich import enrich, leg_facts
from consumers.processor.identity import Identity, digest_raw
from consumers.processor.latency import Latency, LatencyJoin
from consumers.processor.parse import Unparseable, parse
from consumers.processor.privacy import Privacy
from consumers.processor.rawmeta import RawMeta
from consumers.processor.state import StateDelta
from consumers.processor.window import DedupeWindow

if TYPE_CHECKING:  # settings read Kafka's admin types; the pipeline imports no Kafka client
    from consumers.settings import ProcessorSettings

# Events of the sending side carry a delivery-latency leg; inbound (MO) ones never do.
MT_ORIGINS: Final = frozenset({"SMS_MT", "MMS_MT"})


class Emit(NamedTuple):
    """An event record: key (the tracking id), value (the event's JSON), CloudEvents headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class DeadLetter(NamedTuple):
    """A record to dead-letter: `reason` is a `DeadLetterReason`'s label (consumers/dlq.py),
    `detail` what exactly was wrong."""

    reason: str
    detail: str


class Duplicate:
    """Seen inside the dedupe window already: the event was emitted once, drop this copy."""


DUPLICATE: Final = Duplicate()
Disposition = Emit | DeadLetter | Duplicate
"""What becomes of one raw record; `consumers.writer` turns it into Kafka writes."""


def _header_int(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def configured_identity(settings: ProcessorSettings) -> Identity:
    """The dedupe identity DEDUPE_IDENTITY_FIELDS configures (canonical when unset)."""
    return Identity.from_fields(settings.identity_fields or None)


class PartitionPipeline:
    @classmethod
    def from_settings(
        cls,
        settings: ProcessorSettings,
        topic: str,
        partition: int,
    ) -> PartitionPipeline:
        """The pipeline of one raw partition as the processor's settings configure it."""
        return cls(
            topic,
            partition,
            identity=configured_identity(settings),
            window=DedupeWindow(settings.dedupe_window_ms, settings.dedupe_max_keys),
            latency=LatencyJoin(settings.latency_max_age_ms),
            privacy=Privacy.from_settings(settings),
        )

    def __init__(
        self,
        topic: str,
        partition: int,
        *,
        identity: Identity,
        window: DedupeWindow,
        latency: LatencyJoin,
        privacy: Privacy,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.identity = identity
        self.window = window
        self.latency = latency
        self.privacy = privacy

    def process(
        self, value: bytes, offset: int, headers: raw_record.Headers, timestamp_ms: int
    ) -> Disposition:
        facts = dict(headers)
        # Dedupe and latency state run on the edge's clock, which a restore sees unchanged.
        received_at_ms = _header_int(facts.get(raw_record.RECEIVED_AT)) or timestamp_ms
        content_type = raw_record.header_text(facts.get(raw_record.CONTENT_TYPE))
        try:
            notification = parse(value, content_type)
        except Unparseable as error:
            # Retries of a malformed body are dead-lettered once, like events are emitted once.
            if self.window.seen_or_add(digest_raw(value), received_at_ms):
                return DUPLICATE
            return DeadLetter(error.reason.value, error.detail)
        digest = self.identity.digest(notification)
        if self.window.seen_or_add(digest, received_at_ms):
            return DUPLICATE
        # Positional: a NamedTuple built with keywords costs twice as much, once per record.
        meta = RawMeta(
            self.topic,
            self.partition,
            offset,
            received_at_ms,
            raw_record.header_text(facts.get(raw_record.SOURCE)),
            content_type,
        )
        try:
            event = enrich(notification, meta, digest)
        except Exception as error:  # noqa: BLE001 - a bug must dead-letter, never block
            return DeadLetter(
                DeadLetterReason.ENRICH_FAILED.value, f"{type(error).__name__}: {error}"
            )
        tracking_id = event["tracking_id"]
        if tracking_id is not None and event["origin"] in MT_ORIGINS:
            latency = self._observe_leg(
                tracking_id,
                event["status"],
                event["is_final"],
                event["postback_lag_ms"],
                received_at_ms,
            )
            if latency is not None:
                event["delivery_latency_ms"] = latency.latency_ms
                event["delivery_latency_final_first"] = latency.final_first
        self.privacy.apply(event)
        key = tracking_id or event["event_id"]
        return Emit(key.encode(), orjson.dumps(event), cloudevents.headers(event))

    def restore(
        self, value: bytes, offset: int, headers: raw_record.Headers, timestamp_ms: int
    ) -> None:
        """Change the state exactly as `process` would, without building the event.

        A restore from the raw topic re-reads up to hours of records; this path skips
        enrichment and serialisation, which are most of a record's cost.
        """
        facts = dict(headers)
        received_at_ms = _header_int(facts.get(raw_record.RECEIVED_AT)) or timestamp_ms
        try:
            notification = parse(value, raw_record.header_text(facts.get(raw_record.CONTENT_TYPE)))
        except Unparseable:
            self.window.seen_or_add(digest_raw(value), received_at_ms)
            return
        if self.window.seen_or_add(self.identity.digest(notification), received_at_ms):
            return
        try:
            leg = leg_facts(notification, received_at_ms)
        except Exception:  # noqa: BLE001 - `process` dead-letters it: no latency leg either
            return
        if leg.tracking_id is not None and leg.origin in MT_ORIGINS:
            self._observe_leg(
                leg.tracking_id, leg.status, leg.is_final, leg.postback_lag_ms, received_at_ms
            )

    def _observe_leg(
        self,
        tracking_id: str,
        status: Status,
        is_final: bool | None,
        postback_lag_ms: int | None,
        received_at_ms: int,
    ) -> Latency | None:
        """Join one leg of an MT message; the latency to put on its event, if this leg ends
        the wait (consumers/processor/latency.py)."""
        occurred_ms = (
            received_at_ms if postback_lag_ms is None else received_at_ms - postback_lag_ms
        )
        if status == "sent":
            return self.latency.observe_sent(tracking_id, occurred_ms, received_at_ms)
        if is_final is True:
            return self.latency.observe_final(tracking_id, occurred_ms, received_at_ms)
        return None

    def pending_state(self) -> StateDelta:
        """What the batch since the last commit changed in the state; the runtime writes it to
        the state topic in the batch's transaction. Take it before `commit()`."""
        return StateDelta(self.window.pending_delta(), self.latency.pending_delta())

    def apply_state(self, delta: StateDelta) -> None:
        """Change the state as processing and committing that delta's batch did."""
        self.window.apply_delta(delta.window)
        self.latency.apply_delta(delta.latency)
        self.latency.commit()

    def snapshot(self) -> StateDelta:
        """The committed state as one delta that replaces any state it is applied to (cut it
        with `state.in_parts` to write it)."""
        (window,) = self.window.snapshot(max_bytes=2**62)
        return StateDelta(window, self.latency.snapshot())

    def commit(self) -> None:
        self.window.commit()
        self.latency.commit()

    def abort(self) -> None:
        self.window.abort()
        self.latency.abort()

    @property
    def restore_span_ms(self) -> int:
        """How far before the committed position a restore must start re-reading."""
        return max(self.window.restore_span_ms, self.latency.restore_span_ms)
