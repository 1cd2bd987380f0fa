"""The HTTP answer to each outcome, prebuilt: sending one builds nothing.

The request path sends an answer as two ASGI messages. The HTTP layer (ingest/protocol.py),
which refuses before any ASGI request exists, writes the same answers as whole HTTP/1.1
messages (`wire`). Recording a refusal is ingest/refusals.py's job.
"""

from __future__ import annotations

import http

from starlette.types import Send

from ingest.outcomes import Outcome

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
    def __init__(self, *, retry_after_s: int) -> None:
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
