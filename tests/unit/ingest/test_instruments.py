"""Edge metrics on a fresh registry: counted per outcome, with a bounded source label."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ingest.instruments import LATENCY_BUCKETS, OTHER_SOURCE, EdgeMetrics, LoopHistogram
from ingest.outcomes import Outcome


def test_answers_are_counted_by_source_and_status_and_refusals_by_reason() -> None:
    """Every answer shows in requests_total; refusals also in refusals_total by reason."""
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    metrics.answered("mt", Outcome.ACCEPTED, claim=True)
    metrics.answered("mt", Outcome.ACCEPTED, claim=True)
    metrics.answered("mo", Outcome.KAFKA_TIMEOUT, claim=True)
    sample = registry.get_sample_value
    assert sample("postback_edge_requests_total", {"source": "mt", "status": "200"}) == 2
    assert sample("postback_edge_requests_total", {"source": "mo", "status": "503"}) == 1
    assert sample("postback_edge_refusals_total", {"reason": "kafka_timeout"}) == 1
    assert sample("postback_edge_refusals_total", {"reason": "body_too_large"}) == 0


def test_source_labels_beyond_the_cap_fold_into_other() -> None:
    """A flood of distinct URL labels cannot blow up Prometheus: the excess counts as other."""
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry, max_sources=3)
    for source in ("a", "b", "c", "d", "e", "a"):
        metrics.answered(source, Outcome.ACCEPTED, claim=True)
    sample = registry.get_sample_value
    assert sample("postback_edge_requests_total", {"source": "a", "status": "200"}) == 2
    assert sample("postback_edge_requests_total", {"source": OTHER_SOURCE, "status": "200"}) == 2
    assert sample("postback_edge_requests_total", {"source": "d", "status": "200"}) is None


def test_refused_clients_cannot_claim_source_labels() -> None:
    """Refusals of a source no admitted request named count as `other`, so a client that may
    not post cannot use up the label slots; once claimed, a source's refusals show under it."""
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry, max_sources=2, sources=["mo"])
    for n in range(50):
        metrics.answered(f"probe{n}", Outcome.CLIENT_NOT_ALLOWED)
    metrics.answered("mt", Outcome.BAD_CREDENTIALS)
    metrics.answered("mt", Outcome.ACCEPTED, claim=True)
    metrics.answered("mt", Outcome.BAD_CREDENTIALS)
    metrics.answered("mo", Outcome.BODY_TOO_LARGE)  # configured in EDGE_SOURCES: claimed
    metrics.answered("invalid", Outcome.NOT_FOUND)  # the edge's own labels are never capped
    sample = registry.get_sample_value
    assert sample("postback_edge_requests_total", {"source": OTHER_SOURCE, "status": "403"}) == 50
    assert sample("postback_edge_requests_total", {"source": OTHER_SOURCE, "status": "401"}) == 1
    assert sample("postback_edge_requests_total", {"source": "mt", "status": "401"}) == 1
    assert sample("postback_edge_requests_total", {"source": "mt", "status": "200"}) == 1
    assert sample("postback_edge_requests_total", {"source": "mo", "status": "413"}) == 1
    assert sample("postback_edge_requests_total", {"source": "invalid", "status": "404"}) == 1
    assert sample("postback_edge_refusals_total", {"reason": "client_not_allowed"}) == 50


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.0005, 0.00051, 0.001, 1, 2.5, 9.99, 10, 10.01, 1e9],
        [0.003 * n for n in range(1000)],
    ],
)
def test_loop_histograms_export_what_prometheus_client_would(values: list[float]) -> None:
    """The lock-free histogram exports the same series as prometheus_client's own: buckets
    hold values up to and including their bound, then +Inf, count and sum."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_histogram = LoopHistogram("latency_seconds", "Latency.", LATENCY_BUCKETS)
    reference = Histogram("latency_seconds", "Latency.", buckets=LATENCY_BUCKETS, registry=theirs)
    for value in values:
        loop_histogram.observe(value)
        reference.observe(value)

    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            yield loop_histogram.family()

    ours.register(One())
    lines = generate_latest(theirs).decode().splitlines()
    expected = {line for line in lines if "_created" not in line}
    assert set(generate_latest(ours).decode().splitlines()) == expected
