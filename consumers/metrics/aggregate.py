"""One record of the events topic -> metric updates. Pure: no Kafka, no clock, no I/O.

Contract
--------
- `Aggregator.consume(value)` takes a record value as read from Kafka and never raises: a value
  that is not a JSON object is counted in `postback_events_unparseable_total{reason}` and its
  reason returned so the caller can log where it sat. Any JSON object is aggregated, however
  wrong its fields: a field of the wrong type reads as `invalid`, an absent or null one as
  `none`. Readers must tolerate schema additions (docs/events.md), and a metrics service that
  crashes on one odd record stops every dashboard.
- Label values are bounded, so a misbehaving producer cannot blow up Prometheus. Each label has
  a `LabelGuard`: values known from the schema always keep their label, and the first N other
  distinct values seen by this process keep theirs; later ones are counted as `other`. First
  come rather than most frequent because it is deterministic, costs a set lookup, and never
  moves a series from one label value to another mid-flight (which would make `rate()` lie).
  The busiest operators show up in the first minutes of traffic, so in practice the top N is
  the first N; a restart re-learns the set. `postback_metrics_label_values_folded_total` says
  when a cap is reached, so the cap can be raised before a dashboard misleads.
- Country is the subscriber's side of the message: the sender's region for inbound messages
  (origin ending in `_MO`), the recipient's region for everything else (MT deliveries; the
  other origins carry no number, so `none`).
- Durations below zero (provider and edge clocks disagree) are observed as 0 and counted in
  `postback_negative_durations_total{measure}`. A histogram's `_sum` is read as a counter by
  `rate()`, so a negative observation would look like a counter reset and produce a spike;
  counting them separately keeps the skew visible without corrupting the distribution.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Final, Literal

import orjson

from consumers.events.model import STATUSES
from consumers.metrics.instruments import EventInstruments

NONE: Final = "none"  # the event carried no value (null, absent or empty)
OTHER: Final = "other"  # the label's cap of distinct values was reached
INVALID: Final = "invalid"  # the value is not text, or too long to be a label value

# Documented origins (docs/events.md); they never count against the origin cap.
KNOWN_ORIGINS: Final = ("SMS_MT", "MMS_MT", "SMS_MO", "MMS_MO", "SUB", "EMAIL_SUB", "GENERATE_PASS")
KNOWN_SENT_AS: Final = ("SMS", "MMS")
# Caps for labels whose values come from the provider as given. Generous for what the provider
# documents (about forty codes), small against what a bug could produce.
MAX_EXTRA_ORIGINS: Final = 16
MAX_CODES: Final = 100
MAX_EXTRA_STATUSES: Final = 16
MAX_EXTRA_SENT_AS: Final = 4
MAX_LABEL_LENGTH: Final = 64

UnreadableReason = Literal["empty", "invalid_json", "not_an_object"]

_UTC_STAMP: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


class LabelGuard:
    """Bounds one label's values: `known` always pass, then the first `limit` others, then
    `other`. `on_fold` runs once per folded value, to count how often the cap bites."""

    __slots__ = ("_admitted", "_limit", "_on_fold", "_others")

    def __init__(self, limit: int, on_fold: Callable[[], None], known: Iterable[str] = ()) -> None:
        self._admitted = set(known)
        self._limit = limit
        self._others = 0
        self._on_fold = on_fold

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return NONE
        if not isinstance(value, str) or len(value) > MAX_LABEL_LENGTH:
            return INVALID
        if value in self._admitted:
            return value
        if self._others < self._limit:
            self._others += 1
            self._admitted.add(value)
            return value
        self._on_fold()
        return OTHER


class Aggregator:
    """Turns event records into updates of `instruments`. One owner; not thread-safe."""

    def __init__(
        self, instruments: EventInstruments, *, top_operators: int, top_countries: int
    ) -> None:
        self._metrics = instruments

        def guard(label: str, limit: int, known: Iterable[str] = ()) -> LabelGuard:
            return LabelGuard(limit, instruments.fold(label).inc, known)

        self._origin = guard("origin", MAX_EXTRA_ORIGINS, KNOWN_ORIGINS)
        self._code = guard("code", MAX_CODES)
        self._status = guard("status", MAX_EXTRA_STATUSES, STATUSES)
        self._sent_as = guard("sent_as", MAX_EXTRA_SENT_AS, KNOWN_SENT_AS)
        self._operator = guard("operator_id", top_operators)
        self._country = guard("country", top_countries)
        self._operator_names: dict[str, str] = {}
        self._newest_received: str = ""

    def consume(self, value: bytes | None) -> UnreadableReason | None:
        """Count one record; None when it was an event, else why it was skipped."""
        self._metrics.consumed.inc()
        event = read_event(value)
        if isinstance(event, str):
            self._metrics.unreadable(event).inc()
            return event
        self.add(event)
        return None

    def add(self, event: Mapping[str, object]) -> None:
        """Aggregate one event (a decoded JSON object of any shape)."""
        metrics = self._metrics
        origin_value = event.get("origin")
        origin = self._origin(origin_value)
        code = self._code(event.get("code"))
        status = self._status(event.get("status"))
        sent_as = self._sent_as(event.get("sent_as"))
        operator = self._operator(event.get("operator_id"))
        inbound = isinstance(origin_value, str) and origin_value.upper().endswith("_MO")
        country = self._country(event.get("from_region" if inbound else "to_region"))

        metrics.event(origin, code, status, sent_as).inc()
        metrics.operator_event(operator, country).inc()
        if event.get("is_final") is True:
            metrics.final_outcome(operator, country, status).inc()
        if event.get("is_error") is True:
            metrics.error(origin, code).inc()
        self._note_operator_name(operator, event.get("operator_name"))

        latency_s = seconds(event.get("delivery_latency_ms"))
        if latency_s is not None:
            self._observe(metrics.latency(operator, sent_as).observe, latency_s, "delivery_latency")
        lag_s = seconds(event.get("postback_lag_ms"))
        if lag_s is not None:
            self._observe(metrics.postback_lag.observe, lag_s, "postback_lag")
        self._note_received(event.get("received_at"))

    def _observe(self, observe: Callable[[float], None], value_s: float, measure: str) -> None:
        if value_s < 0:
            self._metrics.negative(measure).inc()
            value_s = 0.0
        observe(value_s)

    def _note_operator_name(self, operator: str, name: object) -> None:
        """Keep one name per labelled operator id, the latest seen (v1 postbacks carry none)."""
        if operator in (NONE, OTHER, INVALID) or not isinstance(name, str) or not name:
            return
        name = name[:MAX_LABEL_LENGTH]
        if self._operator_names.get(operator) != name:
            self._operator_names[operator] = name
            self._metrics.operator_name(operator).info({"operator_name": name})

    def _note_received(self, received_at: object) -> None:
        """Advance the newest-event gauge; never backwards, since partitions interleave.

        The schema's timestamp format sorts as text, so only a newer string is parsed.
        """
        if not isinstance(received_at, str) or received_at <= self._newest_received:
            return
        if not _UTC_STAMP.fullmatch(received_at):
            return
        try:
            moment = datetime.fromisoformat(received_at)
        except ValueError:  # matches the pattern but is no date, e.g. month 13
            return
        self._newest_received = received_at
        self._metrics.last_event_received.set(moment.timestamp())


def read_event(value: bytes | None) -> dict[str, object] | UnreadableReason:
    """The event in a record value, or why there is none."""
    if not value:
        return "empty"
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(event, dict):
        return "not_an_object"
    return event


def seconds(milliseconds: object) -> float | None:
    """A duration field in milliseconds as seconds; None when absent or not a number."""
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, (int, float)):
        return None
    if not math.isfinite(milliseconds):
        return None
    return milliseconds / 1000
