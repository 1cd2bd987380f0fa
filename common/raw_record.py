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

# The v2 field the edge keys raw records by (ingest/keys.py): notifications the dedupe
# identity calls the same must agree on it, or they may land in partitions that dedupe apart.
KEY_FIELD: Final = "tracking-id"

Headers = list[tuple[str, bytes]]


def header_map(headers: Headers | None) -> dict[str, bytes]:
    """Headers as a dict; a repeated name keeps its last value, as HTTP proxies do."""
    return dict(headers or ())


def header_text(value: bytes | None) -> str | None:
    """A header's value as the consumers read it: UTF-8 text, None when absent or not UTF-8."""
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
