"""Events -> metrics: what dashboards read, bounded labels, and records that never crash it."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from consumers.events.model import STATUSES
from consumers.metrics.aggregate import Aggregator, LabelGuard, read_event
from consumers.metrics.instruments import EventInstruments
from consumers.processor.enrich import enrich
from consumers.processor.identity import Identity
from consumers.processor.parse import parse
from consumers.processor.rawmeta import RawMeta
from testkit.samples import all_valid

# 2024-03-05T14:22:50Z
RECEIVED_AT = "2024-03-05T14:22:50.000000Z"
RECEIVED_AT_S = 1_709_648_570.0


def event(**changes: Any) -> dict[str, object]:
    """A delivered SMS to a US handset, as the processor writes it, with `changes` applied."""
    base: dict[str, object] = {
        "schema_version": 1,
        "event_id": "4eaa5e6188069e71eddf63b3ab22ad12",
        "origin": "SMS_MT",
        "code": "N202",
        "code_description": "SMS delivered",
        "status": "delivered",
        "status_text": "Delivered",
        "status_details": None,
        "is_final": True,
        "is_error": False,
        "sent_as": "SMS",
        "tracking_id": "U01TXzkxMjM0NTY3",
        "client_reference": None,
        "campaign_ref": "spring-promo",
        "mms_id": None,
        "from": "60856",
        "from_region": None,
        "from_calling_code": None,
        "from_number_type": "short_code",
        "to": "14155550123",
        "to_region": "US",
        "to_calling_code": 1,
        "to_number_type": "fixed_line_or_mobile",
        "from_mask": None,
        "operator_id": "0001470",
        "operator_name": "AT&T",
        "message_text": None,
        "message_subject": None,
        "keyword": None,
        "content_files": [],
        "copy_to": [],
        "provider_timestamp": "2024-03-05T14:22:47.310552Z",
        "provider_timestamp_raw": "2024-03-05T14:22:47.310552+00:00",
        "received_at": RECEIVED_AT,
        "postback_lag_ms": 2690,
        "delivery_latency_ms": None,
        "source": "mt",
        "input_format": "json_v2",
        "lineage": {"topic": "postbacks.raw", "partition": 4, "offset": 981},
        "extra": {},
    }
    base.update(changes)
    return base


class Harness:
    """An aggregator on a fresh registry, with readers for the values a dashboard would see."""

    def __init__(self, top_operators: int = 50, top_countries: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.instruments = EventInstruments(self.registry)
        self.aggregator = Aggregator(
            self.instruments, top_operators=top_operators, top_countries=top_countries
        )

    def add(self, *events: Mapping[str, object]) -> None:
        for one in events:
            assert self.aggregator.consume(orjson.dumps(one)) is None

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str, **labels: str) -> float:
        """Sum of a family's samples named `name` whose labels include `labels`."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


def test_events_are_counted_by_origin_code_status_and_channel() -> None:
    """Each event adds one to the series of its origin, code, status and sent_as."""
    metrics = Harness()
    metrics.add(event(), event(), event(origin="MMS_MT", code="N102", sent_as="MMS"))

    labels = {"origin": "SMS_MT", "code": "N202", "status": "delivered", "sent_as": "SMS"}
    assert metrics.value("postback_events_total", **labels) == 2
    assert metrics.value("postback_events_total", **{**labels, "origin": "MMS_MT"}) == 0
    assert (
        metrics.value(
            "postback_events_total",
            origin="MMS_MT",
            code="N102",
            status="delivered",
            sent_as="MMS",
        )
        == 1
    )
    assert metrics.value("postback_events_consumed_total") == 3


def test_country_is_the_recipient_for_mt_and_the_sender_for_mo() -> None:
    """Country means the subscriber's side: `to_region` for deliveries, `from_region` inbound."""
    metrics = Harness()
    metrics.add(
        event(to_region="DE", from_region=None),
        event(origin="SMS_MO", code="N211", status="received", from_region="GB", to_region="US"),
    )

    assert metrics.value("postback_operator_events_total", operator_id="0001470", country="DE")
    assert metrics.value("postback_operator_events_total", operator_id="0001470", country="GB")
    assert metrics.total("postback_operator_events_total", country="US") == 0


def test_final_outcomes_count_only_final_events() -> None:
    """A failure ratio per operator divides final outcomes, so `sent` and unknown must not count."""
    metrics = Harness()
    metrics.add(
        event(),
        event(code="E201", status="failed", is_error=True),
        event(code="N201", status="sent", is_final=False),
        event(code="E999", status="queue_error", is_final=None, is_error=True),
    )

    final = {"operator_id": "0001470", "country": "US"}
    assert metrics.value("postback_final_outcomes_total", **final, status="delivered") == 1
    assert metrics.value("postback_final_outcomes_total", **final, status="failed") == 1
    assert metrics.total("postback_final_outcomes_total") == 2


def test_errors_are_counted_by_code_when_is_error_is_true() -> None:
    """Only `is_error: true` counts as an error; false and unknown (null) do not."""
    metrics = Harness()
    metrics.add(
        event(code="E201", status="failed", is_error=True),
        event(code="E201", status="failed", is_error=True),
        event(),
        event(code="N104", status="unknown", is_error=None, is_final=None),
    )

    assert metrics.value("postback_errors_total", origin="SMS_MT", code="E201") == 2
    assert metrics.total("postback_errors_total") == 2


def test_operators_beyond_the_cap_fold_into_other() -> None:
    """The first N distinct operator ids keep their label; later ones count as `other`."""
    metrics = Harness(top_operators=2)
    metrics.add(
        event(operator_id="A"),
        event(operator_id="B"),
        event(operator_id="C"),
        event(operator_id="D"),
        event(operator_id="A"),
        event(operator_id=None),
    )

    def by_operator(operator_id: str) -> float:
        return metrics.total("postback_operator_events_total", operator_id=operator_id)

    assert (by_operator("A"), by_operator("B"), by_operator("other")) == (2, 1, 2)
    assert by_operator("C") == by_operator("D") == 0
    assert by_operator("none") == 1, "an absent operator takes no slot and is never folded"
    assert metrics.value("postback_metrics_label_values_folded_total", label="operator_id") == 2
    assert metrics.total("postback_final_outcomes_total", operator_id="other") == 2


def test_countries_beyond_the_cap_fold_into_other() -> None:
    """Recipient countries are capped the same way, by METRICS_TOP_COUNTRIES."""
    metrics = Harness(top_countries=1)
    metrics.add(event(to_region="US"), event(to_region="DE"), event(to_region="US"))

    assert metrics.total("postback_operator_events_total", country="US") == 2
    assert metrics.total("postback_operator_events_total", country="other") == 1
    assert metrics.value("postback_metrics_label_values_folded_total", label="country") == 1


def test_documented_statuses_never_fold() -> None:
    """Unknown status values are capped, but the schema's own statuses always keep their label."""
    metrics = Harness()
    metrics.add(*(event(status=f"new_status_{n}") for n in range(40)))
    metrics.add(*(event(status=status) for status in STATUSES))

    for status in STATUSES:
        assert metrics.total("postback_events_total", status=status) == 1
    assert metrics.total("postback_events_total", status="other") > 0


def test_null_fields_read_as_none_and_observe_nothing() -> None:
    """An event with every optional fact null still counts, under `none`, with no durations."""
    metrics = Harness()
    metrics.add(
        event(
            sent_as=None,
            operator_id=None,
            operator_name=None,
            to_region=None,
            is_final=None,
            is_error=None,
            postback_lag_ms=None,
            delivery_latency_ms=None,
            received_at=None,
        )
    )

    assert metrics.total("postback_events_total", sent_as="none") == 1
    assert metrics.value("postback_operator_events_total", operator_id="none", country="none") == 1
    assert metrics.total("postback_final_outcomes_total") == 0
    assert metrics.value("postback_lag_seconds_count") == 0
    assert metrics.total("postback_delivery_latency_seconds_count") == 0
    assert math.isnan(metrics.value("postback_last_event_received_timestamp_seconds"))
    assert metrics.total("postback_operator_info") == 0


def test_an_event_without_the_latency_field_is_still_counted() -> None:
    """Events written before `delivery_latency_ms` existed are read like a null latency."""
    metrics = Harness()
    older = event()
    del older["delivery_latency_ms"]
    metrics.add(older)

    assert metrics.total("postback_events_total") == 1
    assert metrics.total("postback_delivery_latency_seconds_count") == 0


def test_fields_of_the_wrong_type_read_as_invalid() -> None:
    """A field with an unexpected type is labelled `invalid`; the event still counts."""
    metrics = Harness()
    metrics.add(
        event(
            origin=7,
            code=["N202"],
            operator_id={"id": 1},
            operator_name=5,
            to_region="X" * 200,
            postback_lag_ms="2690",
            delivery_latency_ms=True,
            received_at=17,
            is_final="yes",
        )
    )

    labels = {"origin": "invalid", "code": "invalid", "status": "delivered", "sent_as": "SMS"}
    assert metrics.value("postback_events_total", **labels) == 1
    assert metrics.value("postback_operator_events_total", operator_id="invalid", country="invalid")
    assert metrics.total("postback_final_outcomes_total") == 0
    assert metrics.value("postback_lag_seconds_count") == 0
    assert metrics.total("postback_delivery_latency_seconds_count") == 0


def test_negative_postback_lag_is_observed_as_zero_and_counted() -> None:
    """Clock skew shows in its own counter and never subtracts from the histogram's sum."""
    metrics = Harness()
    metrics.add(event(postback_lag_ms=-2500), event(postback_lag_ms=1500))

    assert metrics.value("postback_lag_seconds_count") == 2
    assert metrics.value("postback_lag_seconds_sum") == 1.5
    assert metrics.value("postback_lag_seconds_bucket", le="0.25") == 1
    assert metrics.value("postback_negative_durations_total", measure="postback_lag") == 1


def test_delivery_latency_is_observed_in_seconds_by_operator_and_channel() -> None:
    """Each non-null latency is one observation, on a final or on a late (final-first) sent."""
    metrics = Harness()
    metrics.add(
        event(delivery_latency_ms=42_000),
        event(
            code="N201",
            status="sent",
            is_final=False,
            delivery_latency_ms=3_000,
            delivery_latency_final_first=True,
        ),
        event(delivery_latency_ms=-1_000),
        event(delivery_latency_ms=None),
    )

    labels = {"operator_id": "0001470", "sent_as": "SMS"}
    assert metrics.value("postback_delivery_latency_seconds_count", **labels) == 3
    assert metrics.value("postback_delivery_latency_seconds_sum", **labels) == 45.0
    assert metrics.value("postback_delivery_latency_seconds_bucket", **labels, le="5.0") == 2
    assert metrics.value("postback_negative_durations_total", measure="delivery_latency") == 1


def test_last_event_time_only_moves_forward() -> None:
    """The gauge holds the newest received_at seen, whatever order partitions deliver in."""
    metrics = Harness()
    metrics.add(
        event(received_at="2024-03-05T14:22:50.000000Z"),
        event(received_at="2024-03-05T14:20:00.000000Z"),
        event(received_at="2024-13-45T99:00:00.000000Z"),
        event(received_at="not a time"),
    )

    assert metrics.value("postback_last_event_received_timestamp_seconds") == RECEIVED_AT_S


def test_unreadable_records_are_counted_and_skipped() -> None:
    """Bad records on the events topic are counted by reason and never stop the service."""
    metrics = Harness()
    aggregator = metrics.aggregator

    assert aggregator.consume(None) == "empty"
    assert aggregator.consume(b"") == "empty"
    assert aggregator.consume(b'{"origin": "SMS_MT"') == "invalid_json"
    assert aggregator.consume(b"\xff\xfe") == "invalid_json"
    assert aggregator.consume(b"[1, 2]") == "not_an_object"
    assert aggregator.consume(orjson.dumps(event())) is None

    assert metrics.value("postback_events_consumed_total") == 6
    assert metrics.value("postback_events_unparseable_total", reason="empty") == 2
    assert metrics.value("postback_events_unparseable_total", reason="invalid_json") == 2
    assert metrics.value("postback_events_unparseable_total", reason="not_an_object") == 1
    assert metrics.total("postback_events_total") == 1


def test_operator_names_are_published_once_per_labelled_operator() -> None:
    """Dashboards join names on operator_id: one name per id, the latest, none for `other`."""
    metrics = Harness(top_operators=1)
    metrics.add(
        event(operator_id="0001470", operator_name="AT&T"),
        event(operator_id="0001470", operator_name=None),
        event(operator_id="0001470", operator_name="AT&T Mobility"),
        event(operator_id="0001570", operator_name="Verizon Wireless"),
    )

    assert metrics.total("postback_operator_info") == 1
    assert metrics.value(
        "postback_operator_info", operator_id="0001470", operator_name="AT&T Mobility"
    )


def test_consumer_lag_forgets_partitions_given_up() -> None:
    """After a rebalance only the partitions this process holds report lag."""
    metrics = Harness()
    metrics.instruments.set_consumer_lag({0: 5, 1: 0})
    metrics.instruments.set_consumer_lag({1: 3, 2: 7})

    assert (
        metrics.registry.get_sample_value("postback_metrics_consumer_lag", {"partition": "0"})
        is None
    )
    assert metrics.value("postback_metrics_consumer_lag", partition="1") == 3
    assert metrics.value("postback_metrics_consumer_lag", partition="2") == 7


def test_label_guard_passes_known_values_and_counts_folds() -> None:
    """Known values are free; the cap applies to the rest; empty text means absent."""
    folds: list[None] = []
    guard = LabelGuard(1, lambda: folds.append(None), known=("SMS",))

    assert [guard(v) for v in ("SMS", "RCS", "FAX", "SMS", "", None)] == [
        "SMS",
        "RCS",
        "other",
        "SMS",
        "none",
        "none",
    ]
    assert len(folds) == 1


def test_every_sample_postback_is_counted_once_by_status() -> None:
    """Events the real processor makes from every sample are all counted, under their status."""
    metrics = Harness()
    events = []
    for offset, (_kind, body) in enumerate(all_valid()):
        notification = parse(body)
        meta = RawMeta("postbacks.raw", 0, offset, 1_709_648_570_000, "mt")
        events.append(enrich(notification, meta, Identity().digest(notification)))
    metrics.add(*events)

    for status, count in Counter(str(e["status"]) for e in events).items():
        assert metrics.total("postback_events_total", status=status) == count
    finals = sum(1 for e in events if e["is_final"] is True)
    assert metrics.total("postback_final_outcomes_total") == finals
    assert metrics.value("postback_last_event_received_timestamp_seconds") == RECEIVED_AT_S


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=50)
@given(st.dictionaries(st.sampled_from(sorted(event())) | st.text(), JSON_VALUES))
def test_any_json_object_is_counted_without_raising(document: dict[str, object]) -> None:
    """Whatever a JSON object on the topic holds, it is counted as exactly one event."""
    metrics = Harness(top_operators=2, top_countries=2)
    raw = orjson.dumps(document)
    assert read_event(raw) == document

    assert metrics.aggregator.consume(raw) is None
    assert metrics.total("postback_events_total") == 1
    assert metrics.total("postback_operator_events_total") == 1


def test_a_zero_cap_folds_every_operator() -> None:
    """METRICS_TOP_OPERATORS=0 keeps no per-operator series: every operator is `other`."""
    metrics = Harness(top_operators=0)
    metrics.add(event(operator_id="A"), event(operator_id="B"))

    assert metrics.total("postback_operator_events_total", operator_id="other") == 2
    assert metrics.total("postback_operator_info") == 0
