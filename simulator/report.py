"""The numbers of a run, as a JSON document or a table for people. PURE.

- acked: postbacks answered 200 (and the 200 not dropped); given up: still not acked after
  the last retry; abandoned: still queued when the run was stopped (Ctrl-C, --max-duration).
- retried: attempts after a postback's first, over all postbacks (`retried_postbacks` counts
  the postbacks that needed at least one).
- rate: attempts per second of sending, that is of the run's time minus the time spent idle
  waiting for a retry to come due; with a serial client it is what the server sustains.
- latency: of answered attempts, from the start of the attempt (connecting, when needed) to the
  answer's last byte; timeouts and broken connections are counted apart, not as latencies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from simulator.check import CheckResult
from simulator.delivery import Run

PERCENTILES: Final = (50, 95, 99)
LISTED_IN_TABLE: Final = 20  # given-up postbacks shown in the table; JSON lists them all


@dataclass(frozen=True, slots=True)
class GivenUp:
    index: int  # position in the run's mix
    kind: str
    tracking_id: str | None
    attempts: int
    last: str
    stored: bool  # a 200 arrived (and was dropped): the edge holds it anyway


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    seed: int
    postbacks: int
    wires: dict[str, int]
    acked: int
    retried: int
    retried_postbacks: int
    given_up: tuple[GivenUp, ...]
    abandoned: int
    answers_dropped: int
    attempts: int
    statuses: dict[int, int]
    failures: dict[str, int]
    latency_ms: dict[str, float | None]
    elapsed_s: float
    waiting_s: float
    rate_per_s: float | None
    connections: int
    resent: int
    stopped: bool
    check: CheckResult | None = None


def build_report(
    run: Run,
    *,
    url: str,
    seed: int,
    connections: int = 0,
    resent: int = 0,
    check: CheckResult | None = None,
) -> Report:
    latencies = sorted(run.latencies)
    latency_ms = {f"p{p}": _ms(percentile(latencies, p)) for p in PERCENTILES}
    latency_ms["max"] = _ms(latencies[-1] if latencies else None)
    sending = run.elapsed - run.waiting
    return Report(
        url=url,
        seed=seed,
        postbacks=len(run.deliveries),
        wires=dict(Counter(delivery.postback.wire for delivery in run.deliveries)),
        acked=run.count("acked"),
        retried=run.retries,
        retried_postbacks=sum(1 for delivery in run.deliveries if delivery.attempts > 1),
        given_up=tuple(
            GivenUp(d.index, d.postback.kind, d.postback.tracking_id, d.attempts, d.last, d.oks > 0)
            for d in run.deliveries
            if d.fate == "given_up"
        ),
        abandoned=run.count("abandoned"),
        answers_dropped=run.dropped,
        attempts=run.attempts,
        statuses=dict(sorted(run.statuses.items())),
        failures=dict(sorted(run.failures.items())),
        latency_ms=latency_ms,
        elapsed_s=run.elapsed,
        waiting_s=run.waiting,
        rate_per_s=run.attempts / sending if run.attempts and sending > 0 else None,
        connections=connections,
        resent=resent,
        stopped=run.stopped,
        check=check,
    )


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def as_json(report: Report) -> dict[str, Any]:
    return {
        "url": report.url,
        "seed": report.seed,
        "postbacks": report.postbacks,
        "wires": report.wires,
        "acked": report.acked,
        "retried": report.retried,
        "retried_postbacks": report.retried_postbacks,
        "given_up": len(report.given_up),
        "given_up_postbacks": [
            {
                "index": item.index,
                "kind": item.kind,
                "tracking_id": item.tracking_id,
                "attempts": item.attempts,
                "last": item.last,
                "stored": item.stored,
            }
            for item in report.given_up
        ],
        "abandoned": report.abandoned,
        "answers_dropped": report.answers_dropped,
        "attempts": report.attempts,
        "statuses": {str(status): count for status, count in report.statuses.items()},
        "failures": report.failures,
        "latency_ms": report.latency_ms,
        "elapsed_s": round(report.elapsed_s, 3),
        "waiting_s": round(report.waiting_s, 3),
        "rate_per_s": None if report.rate_per_s is None else round(report.rate_per_s, 1),
        "connections": report.connections,
        "resent_on_new_connection": report.resent,
        "stopped_early": report.stopped,
        "check": None if report.check is None else report.check.as_dict(),
    }


def as_table(report: Report) -> str:
    wires = report.wires
    latency = report.latency_ms
    rate = "-" if report.rate_per_s is None else f"{report.rate_per_s:.1f}/s"
    statuses = "  ".join(f"{status}: {count}" for status, count in report.statuses.items())
    failures = "  ".join(f"{name}: {count}" for name, count in report.failures.items())
    lines = [
        f"postback simulator -> {report.url}   seed {report.seed}",
        f"  postbacks        {report.postbacks:>8}   v2 JSON {wires.get('v2_json', 0)}, "
        f"v1 XML {wires.get('v1_xml', 0)}, malformed {wires.get('malformed', 0)}",
        f"  acked            {report.acked:>8}",
        f"  retried          {report.retried:>8}   attempts after the first, "
        f"{report.retried_postbacks} postbacks",
        f"  given up         {len(report.given_up):>8}",
        f"  answers dropped  {report.answers_dropped:>8}   200s ignored on purpose",
        f"  attempts         {report.attempts:>8}   over {report.connections} connection(s)",
        f"  rate             {rate:>8}   sending {report.elapsed_s - report.waiting_s:.2f} s, "
        f"waiting for retries {report.waiting_s:.2f} s",
        f"  latency          p50 {_show(latency['p50'])}  p95 {_show(latency['p95'])}  "
        f"p99 {_show(latency['p99'])}  max {_show(latency['max'])}",
        f"  statuses         {statuses or '-'}",
    ]
    if failures:
        lines.append(f"  no answer        {failures}")
    if report.abandoned:
        lines.append(f"  abandoned        {report.abandoned:>8}   still queued when stopped")
    if report.given_up:
        lines.append("given up:")
        for item in report.given_up[:LISTED_IN_TABLE]:
            stored = ""
            if item.stored:  # a 200 came and was dropped: the postback is in Kafka anyway
                dropped_last = item.last.startswith("200")
                stored = "; the edge has it" + ("" if dropped_last else " (an earlier 200)")
            lines.append(
                f"  #{item.index} {item.kind} tracking-id {item.tracking_id or '-'}: "
                f"{item.attempts} attempt{'' if item.attempts == 1 else 's'}, "
                f"last {item.last}{stored}"
            )
        if len(report.given_up) > LISTED_IN_TABLE:
            lines.append(f"  ... and {len(report.given_up) - LISTED_IN_TABLE} more (--json)")
    if report.check is not None:
        lines.extend(_check_lines(report.check))
    return "\n".join(lines)


def _check_lines(check: CheckResult) -> list[str]:
    verdict = "PASSED" if check.passed else "FAILED"
    lines = [
        f"events check on {check.topic}: {verdict}",
        f"  expected {check.expected}, found {check.found}, missing {len(check.missing)}, "
        f"duplicated {len(check.duplicated)}, malformed bodies as events {check.malformed_events}",
        f"  also seen: {check.unconfirmed_found} events of postbacks never acked, "
        f"{check.foreign} events of other traffic; {check.dead_letters_expected} malformed "
        "postbacks left for the dead-letter topic",
    ]
    for name, ids in (("missing", check.missing), ("duplicated", check.duplicated)):
        if ids:
            shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
            lines.append(f"  {name} event ids: {shown}")
    return lines


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _show(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f} ms"
