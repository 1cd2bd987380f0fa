"""Every metric the edge exports, declared against an injected registry.

Label children are cached here so the request path pays a dict lookup, not a label
resolution, per observation. The `source` label comes from the URL, so it is bounded: after
`max_sources` distinct values, new ones are counted as `other`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.outcomes import Outcome

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (256, 512, 1024, 2048, 4096, 16384, 65536, 262144, 1048576)
OTHER_SOURCE = "other"


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry, *, max_sources: int = 100) -> None:
        self.requests = Counter(
            "postback_edge_requests",
            "Postback requests answered, by URL source label and HTTP status.",
            ["source", "status"],
            registry=registry,
        )
        self.refusals = Counter(
            "postback_edge_refusals",
            "Postback requests not answered 200, by reason (see the runbook for each).",
            ["reason"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "postback_edge_request_duration_seconds",
            "Time from request start to the answer, for postback requests.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "postback_edge_produce_duration_seconds",
            "Time Kafka took to acknowledge a raw record (successful writes only).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.body_bytes = Histogram(
            "postback_edge_body_size_bytes",
            "Size of postback bodies received within the limit.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "postback_edge_requests_in_flight",
            "Postback requests being handled right now.",
            registry=registry,
        )
        self.kafka_up = Gauge(
            "postback_edge_kafka_up",
            "1 while the last Kafka write or probe succeeded, else 0.",
            registry=registry,
        )
        self.outage_seconds = Gauge(
            "postback_edge_kafka_outage_seconds",
            "How long Kafka has been failing, 0 while it is healthy.",
            registry=registry,
        )
        self.retry_budget_seconds = Gauge(
            "postback_edge_provider_retry_budget_seconds",
            "Seconds until postbacks refused at the start of the current Kafka outage exhaust "
            "the provider's retries and are dropped (the full horizon while Kafka is healthy).",
            registry=registry,
        )
        self.draining = Gauge(
            "postback_edge_draining",
            "1 once shutdown began: readiness is false and in-flight requests are finishing.",
            registry=registry,
        )
        self._max_sources = max_sources
        self._source_labels: set[str] = set()
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._refusal_children = {
            outcome: self.refusals.labels(outcome.reason) for outcome in Outcome if outcome.refused
        }

    def watch(
        self,
        kafka_up: Callable[[], bool],
        outage_seconds: Callable[[], float],
        retry_horizon_s: float,
    ) -> None:
        """Read health at scrape time, so the request path never updates these gauges."""
        self.kafka_up.set_function(lambda: 1.0 if kafka_up() else 0.0)
        self.outage_seconds.set_function(outage_seconds)
        self.retry_budget_seconds.set_function(lambda: max(0.0, retry_horizon_s - outage_seconds()))

    def source_label(self, source: str) -> str:
        if source in self._source_labels:
            return source
        if len(self._source_labels) < self._max_sources:
            self._source_labels.add(source)
            return source
        return OTHER_SOURCE

    def answered(self, source: str, outcome: Outcome) -> None:
        key = (self.source_label(source), outcome.status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(key[0], str(key[1]))
        child.inc()
        if outcome.refused:
            self._refusal_children[outcome].inc()
