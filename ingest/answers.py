"""Sends an outcome as an HTTP answer, and records a refusal in the log and the metrics.

Answers are prebuilt per outcome: the request path sends two ASGI messages and builds nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Send

from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome

log = logging.getLogger("ingest")

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


def _answer_headers(outcome: Outcome, retry_after_s: int) -> list[tuple[bytes, bytes]]:
    headers = [_TEXT, (b"content-length", str(len(outcome.body)).encode())]
    if outcome.status == 503:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    if outcome is Outcome.BAD_CREDENTIALS:
        headers.append((b"www-authenticate", b'Basic realm="postbacks", charset="UTF-8"'))
    if outcome.status == 413:
        headers.append((b"connection", b"close"))
    return headers


class Answers:
    def __init__(self, metrics: EdgeMetrics, *, retry_after_s: int) -> None:
        self._metrics = metrics
        self._headers = {outcome: _answer_headers(outcome, retry_after_s) for outcome in Outcome}

    async def send(self, send: Send, outcome: Outcome) -> None:
        if outcome is Outcome.CLIENT_DISCONNECTED:
            return  # nobody is listening
        await send(
            {
                "type": "http.response.start",
                "status": outcome.status,
                "headers": self._headers[outcome],
            }
        )
        await send({"type": "http.response.body", "body": outcome.body})

    def record(self, outcome: Outcome, source: str, **fields: Any) -> None:
        """Count every answer; log the refusals with their reason and whatever explains them."""
        self._metrics.answered(source, outcome)
        if outcome.refused and log.isEnabledFor(outcome.log_level):
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
                        **fields,
                    }
                },
            )
