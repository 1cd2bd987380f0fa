"""The contract between the edge and the consumers: what a `postbacks.raw` record carries.

The value is the request body byte for byte. Everything the edge knew about the request rides
in headers, named here once, so that consumers and replays read exactly what the edge wrote.
"""

from __future__ import annotations

from typing import Final

RECEIVED_AT: Final = "received-at"  # epoch milliseconds, ASCII digits
SOURCE: Final = "source"  # the `{source}` label of the URL, or "default"
CONTENT_TYPE: Final = "content-type"  # as sent by the provider; may be absent
CLIENT_ADDR: Final = "client-addr"  # after trusted-proxy resolution
REQUEST_ID: Final = "request-id"  # the caller's X-Request-ID, or one the edge made up
USER_AGENT: Final = "user-agent"  # may be absent

DEFAULT_SOURCE: Final = "default"

Headers = list[tuple[str, bytes]]


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """Headers as a dict; a repeated name keeps its last value, as HTTP proxies do."""
    return dict(headers or ())
