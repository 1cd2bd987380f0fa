"""Refusals: every one counted, every one logged with the same fields, and no flood of lines
from a refusal storm."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.refusals import LogRation, Refusals

FIELDS = {
    "reason",
    "status",
    "retryable",
    "source",
    "client",
    "request_id",
    "method",
    "path",
    "detail",
    "suppressed",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scope(method: str, path: str, client: str = "203.0.113.9") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "client": (client, 40000)}


def logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [record.fields for record in caplog.records if record.name == "ingest"]  # type: ignore[attr-defined]


@pytest.fixture
def caplog_ingest(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="ingest")
    return caplog


def test_every_refusal_is_logged_with_the_same_fields(
    caplog_ingest: pytest.LogCaptureFixture,
) -> None:
    """Whoever refuses (guard, router, endpoint, HTTP layer), the log line has the same fields,
    so log queries can filter on any of them; what is not known is null."""
    registry = CollectorRegistry()
    refusals = Refusals(EdgeMetrics(registry))

    refusals.record(
        Outcome.CLIENT_NOT_ALLOWED,
        scope("POST", "/postbacks/mt", client="10.0.0.2"),
        client="198.51.100.7",
        request_id="req-1",
    )
    refusals.record(Outcome.NOT_FOUND, scope("GET", "/wp-login.php"))
    refusals.record(
        Outcome.KAFKA_TIMEOUT, scope("POST", "/postbacks/mo"), claim=True, detail="deadline 5 s"
    )
    refusals.record(Outcome.HEADER_TIMEOUT, None, client="192.0.2.1", detail="head not complete")

    lines = logged(caplog_ingest)
    assert [set(line) for line in lines] == [FIELDS] * 4
    assert lines[0] | {"suppressed": 0} == {
        "reason": "client_not_allowed",
        "status": 403,
        "retryable": False,
        "source": "mt",
        "client": "198.51.100.7",  # the caller's (behind a trusted proxy), not the peer
        "request_id": "req-1",
        "method": "POST",
        "path": "/postbacks/mt",
        "detail": None,
        "suppressed": 0,
    }
    assert (lines[1]["source"], lines[1]["client"], lines[1]["path"]) == (
        "none",
        "203.0.113.9",
        "/wp-login.php",
    )
    assert (lines[2]["reason"], lines[2]["retryable"], lines[2]["detail"]) == (
        "kafka_timeout",
        True,
        "deadline 5 s",
    )
    assert (lines[3]["method"], lines[3]["path"], lines[3]["client"]) == (None, None, "192.0.2.1")
    levels = [record.levelno for record in caplog_ingest.records]
    assert levels == [logging.WARNING, logging.INFO, logging.ERROR, logging.INFO]
    sample = registry.get_sample_value
    assert sample("postback_edge_refusals_total", {"reason": "header_timeout"}) == 1
    assert sample("postback_edge_requests_total", {"source": "mo", "status": "503"}) == 1
    assert sample("postback_edge_requests_total", {"source": "none", "status": "404"}) == 1


def test_a_refusal_storm_logs_a_burst_then_a_line_a_minute_with_counts(
    caplog_ingest: pytest.LogCaptureFixture,
) -> None:
    """A scanner's thousand 404s give ten lines, then one a minute saying how many were not
    logged; the counter has every one."""
    registry = CollectorRegistry()
    clock = Clock()
    refusals = Refusals(EdgeMetrics(registry), LogRation(burst=10, every_s=60, clock=clock))
    probe = scope("GET", "/.env")

    for _ in range(1000):
        refusals.record(Outcome.NOT_FOUND, probe)
    assert [line["suppressed"] for line in logged(caplog_ingest)] == [0] * 10
    clock.now += 30
    refusals.record(Outcome.NOT_FOUND, probe)  # half a line earned: not yet
    clock.now += 30
    refusals.record(Outcome.NOT_FOUND, probe)

    assert [line["suppressed"] for line in logged(caplog_ingest)] == [0] * 10 + [991]
    counted = registry.get_sample_value("postback_edge_refusals_total", {"reason": "not_found"})
    assert counted == 1002


def test_a_quiet_reason_earns_its_burst_back() -> None:
    """After a storm has passed, a new problem of the same reason is logged in full again."""
    clock = Clock()
    ration = LogRation(burst=3, every_s=60, clock=clock)

    assert [ration.take("not_found") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 3600
    assert [ration.take("not_found") for _ in range(4)] == [2, 0, 0, None]


def test_each_reason_has_its_own_ration(caplog_ingest: pytest.LogCaptureFixture) -> None:
    """A flood of one reason never hides another: the provider's 401 shows during a 404 storm."""
    clock = Clock()
    refusals = Refusals(
        EdgeMetrics(CollectorRegistry()), LogRation(burst=2, every_s=60, clock=clock)
    )

    for _ in range(50):
        refusals.record(Outcome.NOT_FOUND, scope("GET", "/admin"))
    refusals.record(Outcome.BAD_CREDENTIALS, scope("POST", "/postbacks/mt"))

    assert [line["reason"] for line in logged(caplog_ingest)] == [
        "not_found",
        "not_found",
        "bad_credentials",
    ]
