"""Every metric the edge exports, declared against an injected registry.

The per-request counters and histograms are plain integers that the event loop updates and a
collector reads at scrape time: everything that touches them (requests and the /metrics
endpoint alike) runs on the one event loop thread, so they need none of prometheus_client's
per-update locks, which cost more than the rest of the bookkeeping together. Gauges are read
at scrape time by functions.

The `source` label comes from the URL, so it is bounded twice. A source is *claimed* (becomes
a label value of its own) only by a request that got past the allowlist and the credentials
check and names a source the edge accepts (and every source in EDGE_SOURCES from the start);
refusals of a source nobody claimed count as `other`, so a client that may not post cannot
make up label values. And after `max_sources` claimed values, new ones count as `other` too.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ingest.outcomes import Outcome

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (256, 512, 1024, 2048, 4096, 16384, 65536, 262144, 1048576)
OTHER_SOURCE = "other"
# Labels the edge itself uses for answers that name no source: never claimed, never capped.
FIXED_SOURCES = frozenset({OTHER_SOURCE, "invalid", "none"})


class LoopHistogram:
    """A Prometheus histogram updated from the event loop only (no lock)."""

    __slots__ = ("_bounds", "_counts", "_sum", "documentation", "name")

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets hold values up to and including their bound (`le`).
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative = 0
        buckets = []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            # The `le` text prometheus_client's own histograms export (untyped there).
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum
        )


class EdgeMetrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        max_sources: int = 100,
        sources: Collection[str] = (),
    ) -> None:
        self.request_seconds = LoopHistogram(
            "postback_edge_request_duration_seconds",
            "Time from request start to the answer, for postback requests.",
            LATENCY_BUCKETS,
        )
        self.produce_seconds = LoopHistogram(
            "postback_edge_produce_duration_seconds",
            "Time Kafka took to acknowledge a raw record (successful writes only).",
            LATENCY_BUCKETS,
        )
        self.body_bytes = LoopHistogram(
            "postback_edge_body_size_bytes",
            "Size of postback bodies received within the limit.",
            SIZE_BUCKETS,
        )
        # (source label, status) -> answers; reason -> refusals (every reason, from zero).
        self._requests: dict[tuple[str, int], int] = {}
        self._refusals = {outcome.reason: 0 for outcome in Outcome if outcome.refused}
        self._max_sources = max_sources
        self._claimed: set[str] = set(sorted(sources)[:max_sources])
        registry.register(self)

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

    def source_label(self, source: str, *, claim: bool = False) -> str:
        """The label `source` is counted under; `claim` only for requests past the guard."""
        if source in self._claimed or source in FIXED_SOURCES:
            return source
        if claim and len(self._claimed) < self._max_sources:
            self._claimed.add(source)
            return source
        return OTHER_SOURCE

    def answered(self, source: str, outcome: Outcome, *, claim: bool = False) -> None:
        """Count one answer (and its refusal reason): the only per-request counter update."""
        key = (self.source_label(source, claim=claim), outcome.status)
        self._requests[key] = self._requests.get(key, 0) + 1
        if outcome.refused:
            self._refusals[outcome.reason] += 1

    # prometheus_client's Collector: called by the registry at scrape time (and at register).
    def describe(self) -> Iterator[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "postback_edge_requests",
            "Postback requests answered, by URL source label and HTTP status.",
            labels=["source", "status"],
        )
        for (source, status), count in sorted(self._requests.items()):
            requests.add_metric([source, str(status)], count)
        yield requests
        refusals = CounterMetricFamily(
            "postback_edge_refusals",
            "Postback requests not answered 200, by reason (see the runbook for each).",
            labels=["reason"],
        )
        for reason, count in sorted(self._refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        for histogram in (self.request_seconds, self.produce_seconds, self.body_bytes):
            yield histogram.family()
