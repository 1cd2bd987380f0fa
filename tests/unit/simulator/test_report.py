"""The run report: the numbers a person reads after a run, and a script parses."""

from __future__ import annotations

from collections import Counter

import pytest

from simulator.delivery import Delivery, Run
from simulator.mix import JSON, Postback, Wire
from simulator.report import as_json, as_table, build_report, percentile


def postback(n: int, wire: Wire = "v2_json") -> Postback:
    return Postback("MMS_MT/N101", wire, "sent", f"T{n}", b"{}", JSON)


@pytest.mark.parametrize(
    ("p", "expected"), [(50, 50.0), (95, 95.0), (99, 99.0), (100, 100.0), (1, 1.0)]
)
def test_percentiles_are_nearest_rank(p: float, expected: float) -> None:
    """p95 of 1..100 ms is 95 ms: the value at or below which 95 % of answers fell."""
    assert percentile([float(n) for n in range(1, 101)], p) == expected


def test_percentiles_of_nothing_are_none() -> None:
    """A run without a single answer reports no latency rather than a made-up zero."""
    assert percentile([], 99) is None


def test_the_report_counts_fates_retries_rate_and_latency() -> None:
    """Acked, retried, given up and the status counts add up to what happened."""
    run = Run(
        deliveries=[
            Delivery(0, postback(0), attempts=1, oks=1, fate="acked", last="200"),
            Delivery(1, postback(1), attempts=3, oks=2, dropped=1, fate="acked", last="200"),
            Delivery(2, postback(2, "malformed"), attempts=6, fate="given_up", last="timeout"),
        ],
        latencies=[0.001, 0.002, 0.003, 0.004, 0.010],
        statuses=Counter({200: 3, 503: 2}),
        failures=Counter({"timeout": 5}),
        attempts=10,
        retries=7,
        dropped=1,
        elapsed=3.0,
        waiting=1.0,
    )
    report = build_report(run, url="http://127.0.0.1:1/postbacks", seed=5, connections=6)
    document = as_json(report)
    assert document["acked"] == 2
    assert document["retried"] == 7
    assert document["retried_postbacks"] == 2
    assert document["given_up"] == 1
    assert document["given_up_postbacks"] == [
        {
            "index": 2,
            "kind": "MMS_MT/N101",
            "tracking_id": "T2",
            "attempts": 6,
            "last": "timeout",
            "stored": False,
        }
    ]
    assert document["statuses"] == {"200": 3, "503": 2}
    assert document["rate_per_s"] == 5.0  # 10 attempts in 2 s of sending
    assert document["latency_ms"] == {"p50": 3.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert document["wires"] == {"v2_json": 2, "malformed": 1}
    assert document["check"] is None
    table = as_table(report)
    assert "given up" in table
    assert "#2 MMS_MT/N101 tracking-id T2: 6 attempts, last timeout" in table
    assert "200: 3  503: 2" in table
    assert "p95 10.0 ms" in table
