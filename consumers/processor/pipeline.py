"""Everything done to one raw record, in order, for one partition of `postbacks.raw`.

    parse -> identify -> dedupe -> enrich -> join delivery latency -> privacy -> serialise

Each record ends in exactly one of three outcomes: an event to emit, a duplicate to drop, or a
dead letter. Pure apart from the per-partition state it owns (the dedupe window and the
latency join), which follows the Kafka transaction: `commit()` once the transaction carrying
this batch's output committed, `abort()` if it did not. No Kafka client is imported here; the
runtime feeds records in and writes outcomes out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

import orjson

from common import raw_record
from consumers.events import cloudevents
from consumers.events.model import Event
from consumers.processor.enrich import LegFacts, enrich, leg_facts
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
    reason: str
    detail: str


class Duplicate:
    """Seen inside the dedupe window already: the event was emitted once, drop this copy."""


DUPLICATE: Final = Duplicate()
Outcome = Emit | DeadLetter | Duplicate


def _header_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _header_int(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


class PartitionPipeline:
    @classmethod
    def from_settings(
        cls,
        settings: ProcessorSettings,
        topic: str,
        partition: int,
        *,
        privacy: Privacy | None = None,
    ) -> PartitionPipeline:
        """The pipeline of one raw partition as the processor's settings configure it.

        `privacy` is best shared by the pipelines of one process: its caches of published
        numbers are per object, and the same numbers recur in every partition.
        """
        return cls(
            topic,
            partition,
            identity=Identity.from_fields(settings.identity_fields or None),
            window=DedupeWindow(settings.dedupe_window_ms, settings.dedupe_max_keys),
            latency=LatencyJoin(settings.latency_max_age_ms),
            privacy=privacy or Privacy.from_settings(settings),
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
    ) -> Outcome:
        facts = dict(headers)
        # Dedupe and latency state run on the edge's clock, which a replay sees unchanged.
        received_at_ms = _header_int(facts.get(raw_record.RECEIVED_AT)) or timestamp_ms
        content_type = _header_text(facts.get(raw_record.CONTENT_TYPE))
        try:
            notification = parse(value, content_type)
        except Unparseable as error:
            # Retries of a malformed body are dead-lettered once, like events are emitted once.
            if self.window.seen_or_add(digest_raw(value), received_at_ms):
                return DUPLICATE
            return DeadLetter(error.reason, error.detail)
        digest = self.identity.digest(notification)
        if self.window.seen_or_add(digest, received_at_ms):
            return DUPLICATE
        meta = RawMeta(
            topic=self.topic,
            partition=self.partition,
            offset=offset,
            received_at_ms=received_at_ms,
            source=_header_text(facts.get(raw_record.SOURCE)),
            content_type=content_type,
        )
        try:
            event = enrich(notification, meta, digest)
        except Exception as error:  # noqa: BLE001 - a bug must dead-letter, never block
            return DeadLetter("enrich_failed", f"{type(error).__name__}: {error}")
        self._join_latency(event, received_at_ms)
        self.privacy.apply(event)
        key = event["tracking_id"] or event["event_id"]
        return Emit(key.encode(), orjson.dumps(event), cloudevents.headers(event))

    def restore(
        self, value: bytes, offset: int, headers: raw_record.Headers, timestamp_ms: int
    ) -> None:
        """Change the state exactly as `process` would, without building the event.

        A rebuild after an assignment replays up to hours of records; this path skips
        enrichment and serialisation, which are most of a record's cost.
        """
        facts = dict(headers)
        received_at_ms = _header_int(facts.get(raw_record.RECEIVED_AT)) or timestamp_ms
        try:
            notification = parse(value, _header_text(facts.get(raw_record.CONTENT_TYPE)))
        except Unparseable:
            self.window.seen_or_add(digest_raw(value), received_at_ms)
            return
        if self.window.seen_or_add(self.identity.digest(notification), received_at_ms):
            return
        try:
            leg = leg_facts(notification, received_at_ms)
        except Exception:  # noqa: BLE001 - `process` dead-letters it: no latency leg either
            return
        self._observe_leg(leg, received_at_ms)

    def _join_latency(self, event: Event, received_at_ms: int) -> None:
        leg = LegFacts(
            event["origin"],
            event["tracking_id"],
            event["status"],
            event["is_final"],
            event["postback_lag_ms"],
        )
        latency = self._observe_leg(leg, received_at_ms)
        event["delivery_latency_ms"] = None if latency is None else latency.latency_ms
        event["delivery_latency_final_first"] = None if latency is None else latency.final_first

    def _observe_leg(self, leg: LegFacts, received_at_ms: int) -> Latency | None:
        tracking_id = leg.tracking_id
        if leg.origin not in MT_ORIGINS or tracking_id is None:
            return None
        lag = leg.postback_lag_ms
        occurred_ms = received_at_ms - lag if lag is not None else received_at_ms
        if leg.status == "sent":
            return self.latency.observe_sent(tracking_id, occurred_ms, received_at_ms)
        if leg.is_final is True:
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
    def replay_span_ms(self) -> int:
        """How far before the committed position a rebuild must start re-reading."""
        return max(self.window.replay_span_ms, self.latency.replay_span_ms)
