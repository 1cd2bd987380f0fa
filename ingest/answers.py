"""Sends an outcome as an HTTP answer, and records a refusal in the log and the metrics.

Answers are prebuilt per outcome: the request path sends two ASGI messages and builds nothing.
The HTTP layer (ingest/protocol.py), which refuses before any ASGI request exists, writes the
same answers as whole HTTP/1.1 messages (`wire`).
"""

from __future__ import annotations

import http
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.paths import is_postback_path, source_label

log = logging.getLogger("ingest")

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


def _answer_headers(outcome: Outcome, retry_after_s: int) -> list[tuple[bytes, bytes]]:
    headers = [_TEXT, (b"content-length", str(len(outcome.body)).encode())]
    if outcome.status == 503:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    if outcome is Outcome.METHOD_NOT_ALLOWED:
        headers.append((b"allow", b"POST"))  # the postback URLs; other 405s come from routing
    if outcome is Outcome.BAD_CREDENTIALS:
        headers.append((b"www-authenticate", b'Basic realm="postbacks", charset="UTF-8"'))
    if outcome.closes:
        headers.append((b"connection", b"close"))
    return headers


def _wire(outcome: Outcome, headers: list[tuple[bytes, bytes]]) -> bytes:
    status = f"HTTP/1.1 {outcome.status} {http.HTTPStatus(outcome.status).phrase}\r\n"
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return status.encode() + lines + b"\r\n" + outcome.body


class Answers:
    def __init__(self, metrics: EdgeMetrics, *, retry_after_s: int) -> None:
        self._metrics = metrics
        self._headers = {outcome: _answer_headers(outcome, retry_after_s) for outcome in Outcome}
        self._wire: dict[Outcome, bytes] = {
            outcome: _wire(outcome, headers)
            for outcome, headers in self._headers.items()
            if outcome is not Outcome.CLIENT_DISCONNECTED
        }

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

    def wire(self, outcome: Outcome) -> bytes:
        """The whole answer as HTTP/1.1 bytes, for the HTTP layer to write itself."""
        return self._wire[outcome]

    def record(self, outcome: Outcome, source: str, *, claim: bool = False, **fields: Any) -> None:
        """Count every answer; log the refusals with their reason and whatever explains them.

        `claim` (see ingest/instruments.py) only for requests the guard let through: the others
        count under `source` only if such a request claimed it before.
        """
        self._metrics.answered(source, outcome, claim=claim)
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

    async def refuse(self, scope: Scope, receive: Receive, send: Send, *, outcome: Outcome) -> None:
        """Answer a request with `outcome` instead of the application (ingest/protocol.py)."""
        path: str = scope["path"]
        client = scope.get("client")
        self.record(
            outcome,
            source_label(path) if is_postback_path(path) else "none",
            client=client[0] if client else None,
            method=scope["method"],
            path=path[:200],
        )
        await self.send(send, outcome)
