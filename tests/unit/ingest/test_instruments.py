"""Edge metrics on a fresh registry: counted per outcome, with a bounded source label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ingest.instruments import OTHER_SOURCE, EdgeMetrics
from ingest.outcomes import Outcome


def test_answers_are_counted_by_source_and_status_and_refusals_by_reason() -> None:
    """Every answer shows in requests_total; refusals also in refusals_total by reason."""
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    metrics.answered("mt", Outcome.ACCEPTED)
    metrics.answered("mt", Outcome.ACCEPTED)
    metrics.answered("mo", Outcome.KAFKA_TIMEOUT)
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
        metrics.answered(source, Outcome.ACCEPTED)
    sample = registry.get_sample_value
    assert sample("postback_edge_requests_total", {"source": "a", "status": "200"}) == 2
    assert sample("postback_edge_requests_total", {"source": OTHER_SOURCE, "status": "200"}) == 2
    assert sample("postback_edge_requests_total", {"source": "d", "status": "200"}) is None


def test_only_accepted_is_200_and_every_retryable_refusal_asks_for_a_retry() -> None:
    """The provider forgets a postback only on 200, so only a stored one may get it."""
    assert [o for o in Outcome if o.status == 200] == [Outcome.ACCEPTED]
    for outcome in Outcome:
        if outcome.retryable:
            assert outcome.status in (408, 499, 503), outcome
    assert len({o.reason for o in Outcome}) == len(Outcome)
