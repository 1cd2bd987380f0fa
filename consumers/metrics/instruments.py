"""Every metric the metrics service exports, declared once against an injected registry.

Names follow the Prometheus conventions: `postback_` prefix, base units (`_seconds`), counters
named without `_total` (prometheus_client adds it). Series about the postbacks themselves are
`postback_*`; series about this service's own consumption are `postback_metrics_*`.

Label values arrive here already bounded (consumers.metrics.aggregate guards them), so the
child caches below are bounded too. A cached child costs one dict lookup per observation instead
of prometheus_client's label validation and locking on every `labels()` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

# From a few seconds (SMS receipts) to the six hours after which the processor stops waiting
# for a message's other leg; anything above lands in +Inf.
DELIVERY_LATENCY_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
# Sub-second on a healthy provider; multiples of five minutes once it retries; days after an
# outage on its side.
POSTBACK_LAG_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 21600, 86400)

Metric = TypeVar("Metric", bound=MetricWrapperBase)


class Children(Generic[Metric]):
    """The label children of one labelled metric, created on first use and kept."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: Metric) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Metric] = {}

    def __call__(self, *values: str) -> Metric:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


class EventInstruments:
    """The service's metrics. Attributes are the metric families; the callables are children."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "postback_events_consumed",
            "Records read from the events topic (committed transactions only), readable or not.",
            registry=registry,
        )
        self.unparseable = Counter(
            "postback_events_unparseable",
            "Records on the events topic that are not a JSON object, by reason; skipped.",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            "postback_events",
            "Events by the provider's origin and code, normalised status, and channel sent as.",
            ["origin", "code", "status", "sent_as"],
            registry=registry,
        )
        self.operator_events = Counter(
            "postback_operator_events",
            "Events by carrier id and subscriber country (recipient of MT, sender of MO).",
            ["operator_id", "country"],
            registry=registry,
        )
        self.final_outcomes = Counter(
            "postback_final_outcomes",
            "Events after which no further delivery postback is expected (is_final), by "
            "carrier id, subscriber country and normalised status.",
            ["operator_id", "country", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "postback_errors",
            "Events reporting a failure outcome (is_error), by origin and provider code.",
            ["origin", "code"],
            registry=registry,
        )
        self.operator = Info(
            "postback_operator",
            "Latest carrier name seen for each carrier id that has its own label value; join "
            "on operator_id to show names.",
            ["operator_id"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "postback_delivery_latency_seconds",
            "Time from a message's sent notification to its final outcome, by provider "
            "timestamps; one observation per message (negative values observed as 0).",
            ["operator_id", "sent_as"],
            buckets=DELIVERY_LATENCY_BUCKETS,
            registry=registry,
        )
        self.postback_lag = Histogram(
            "postback_lag_seconds",
            "Time from the provider's timestamp to the edge receiving the postback (negative "
            "values, from disagreeing clocks, observed as 0).",
            buckets=POSTBACK_LAG_BUCKETS,
            registry=registry,
        )
        self.negative_durations = Counter(
            "postback_negative_durations",
            "Durations below zero (the clocks disagree), by measure: postback_lag or "
            "delivery_latency. Each was observed as 0 in its histogram.",
            ["measure"],
            registry=registry,
        )
        self.last_event_received = Gauge(
            "postback_last_event_received_timestamp_seconds",
            "Newest received_at among the events this process consumed, in Unix seconds; NaN "
            "until the first one.",
            registry=registry,
        )
        self.folded = Counter(
            "postback_metrics_label_values_folded",
            "Events whose value for a label was counted as `other` because that label's cap "
            "of distinct values was reached, by label.",
            ["label"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "postback_metrics_consumer_lag",
            "Records on the events topic not yet read by this service (high water minus "
            "position), by partition assigned to this process.",
            ["partition"],
            registry=registry,
        )
        self.last_event_received.set(float("nan"))
        self.event = Children(self.events)
        self.operator_event = Children(self.operator_events)
        self.final_outcome = Children(self.final_outcomes)
        self.error = Children(self.errors)
        self.operator_name = Children(self.operator)
        self.latency = Children(self.delivery_latency)
        self.negative = Children(self.negative_durations)
        self.fold = Children(self.folded)
        self.unreadable = Children(self.unparseable)
        self._lag_partitions: set[int] = set()

    def set_consumer_lag(self, lags: Mapping[int, int]) -> None:
        """Publish the lag of the partitions this process holds now, and only those.

        After a rebalance another member reports a partition this one gave up; keeping its last
        value here would double it in a `sum()` and freeze it in a `max()`.
        """
        for partition in self._lag_partitions - lags.keys():
            self.consumer_lag.remove(str(partition))
        for partition, lag in lags.items():
            self.consumer_lag.labels(str(partition)).set(lag)
        self._lag_partitions = set(lags)
