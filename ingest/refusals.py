"""The one place the edge records a refusal: counted, and logged with the same fields each time.

Every answer other than 200, whoever gives it (the guard, the router, the postback endpoint,
the HTTP layer in ingest/protocol.py before any request exists), is recorded by
`Refusals.record`: counted in `postback_edge_requests_total{source,status}` and
`postback_edge_refusals_total{reason}`, and logged at the level the outcome table
(ingest/outcomes.py) gives its reason, with these fields, null when not known: `reason`,
`status`, `retryable`, `source`, `client`, `request_id`, `method`, `path`, `detail` (what
explains this refusal: the deadline, Kafka's error, the declared size, ...) and `suppressed`.

A refusal storm (a scanner, a client outside the allowlist retrying, every postback during a
Kafka outage) must not log a line per request for as long as it lasts. Lines are rationed per
reason, as a token bucket: up to `burst` lines at once (10), then one per `every_s` (60 s); a
line's `suppressed` says how many refusals of its reason were not logged since the previous
line of that reason. The counters count every refusal whatever the log shows, and a quiet
reason earns its burst back over time, so a new problem is logged in full. Memory is one
small record per reason: the outcome table bounds them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Scope

from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.paths import is_postback_path, source_label

log = logging.getLogger("ingest")

_MAX_PATH = 200  # characters of a refused path worth logging


@dataclass(slots=True)
class _Bucket:
    lines: float  # lines that may be logged now
    refilled_at: float
    suppressed: int = 0


class LogRation:
    """Per key, `burst` lines at once, then one every `every_s`, with a count of the rest."""

    def __init__(
        self, *, burst: int = 10, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = burst
        self._every_s = every_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> int | None:
        """None: do not log this one. Otherwise log it, saying how many went unlogged since
        the previous line of `key`."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(lines=self._burst, refilled_at=now)
        else:
            earned = (now - bucket.refilled_at) / self._every_s
            bucket.lines = min(self._burst, bucket.lines + earned)
            bucket.refilled_at = now
        if bucket.lines < 1:
            bucket.suppressed += 1
            return None
        bucket.lines -= 1
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return suppressed


class Refusals:
    def __init__(self, metrics: EdgeMetrics, ration: LogRation | None = None) -> None:
        self._metrics = metrics
        self._ration = ration or LogRation()

    def record(
        self,
        outcome: Outcome,
        scope: Scope | None,
        *,
        source: str | None = None,
        claim: bool = False,
        client: str | None = None,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Count and log one refusal of the request `scope` (None: its head never completed).

        `source` and `client` default to what the scope says (the URL's source label, the
        peer address); callers that know better (an invalid source, the client behind a
        trusted proxy) pass theirs. `claim` (see ingest/instruments.py) only for requests the
        guard let through.
        """
        path: str | None = scope["path"] if scope is not None else None
        if source is None:
            source = source_label(path) if path is not None and is_postback_path(path) else "none"
        self._metrics.answered(source, outcome, claim=claim)
        if not log.isEnabledFor(outcome.log_level):
            return
        suppressed = self._ration.take(outcome.reason)
        if suppressed is None:
            return
        if client is None and scope is not None and scope.get("client"):
            client = scope["client"][0]
        log.log(
            outcome.log_level,
            "postback refused: %s",
            outcome.reason,
            extra={
                "fields": {
                    "reason": outcome.reason,
                    "status": outcome.status,
                    "retryable": outcome.retryable,
                    "source": source,
                    "client": client,
                    "request_id": request_id,
                    "method": scope["method"] if scope is not None else None,
                    "path": path[:_MAX_PATH] if path is not None else None,
                    "detail": detail,
                    "suppressed": suppressed,
                }
            },
        )
