"""The CloudEvents 1.0 attributes of an event, as Kafka headers (Kafka binding, binary mode).

The record value stays the event's plain JSON and the key stays the tracking id; the headers
let sinks and routers that speak CloudEvents (Knative, Flink, Materialize, RisingWave,
ClickHouse) read id, type, source and time without parsing the value. docs/events.md lists the
attributes and types.

Built for every emitted record, so the few distinct values (types, sources) are encoded once
and the rest is one `str.encode` each.
"""

from __future__ import annotations

import functools
from typing import Final
from urllib.parse import quote

from consumers.events.model import SCHEMA_ID, SCHEMA_VERSION, Event, Status

SPECVERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"
# The edge's URL space: a postback posted to /postbacks/{source} has that path as its source.
SOURCE_PREFIX: Final = "/postbacks"

# One type per kind of notification, versioned with the schema: a breaking change to the
# event renames every type (`.v2` -> `.v3`), so routers filtering on type never get a shape
# they do not expect.
TYPE_PREFIX: Final = "postback."
KINDS: Final = ("delivery", "transcoding", "inbound", "subscription", "pass", "other")
_KIND_OF_ORIGIN: Final = {
    "SMS_MT": "delivery",
    "MMS_MT": "delivery",
    "SMS_MO": "inbound",
    "MMS_MO": "inbound",
    "SUB": "subscription",
    "EMAIL_SUB": "subscription",
    "GENERATE_PASS": "pass",
}
# Saved-content results arrive under MMS_MT but report on encoding, not on a delivery.
_TRANSCODING: Final[frozenset[Status]] = frozenset(
    {"transcoded", "transcoding_failed", "content_invalid"}
)


def type_of(kind: str) -> str:
    """The `type` attribute of a kind of notification, e.g. `postback.delivery.v2`."""
    return f"{TYPE_PREFIX}{kind}.v{SCHEMA_VERSION}"


_TYPES: Final = {kind: type_of(kind).encode() for kind in KINDS}
_SPECVERSION: Final = SPECVERSION.encode()
_DATASCHEMA: Final = SCHEMA_ID.encode()
_CONTENT_TYPE: Final = CONTENT_TYPE.encode()


def kind_of(origin: str, status: Status) -> str:
    """Which kind of notification an event is (see KINDS); `other` for an unknown origin."""
    if status in _TRANSCODING:
        return "transcoding"
    kind = _KIND_OF_ORIGIN.get(origin)
    if kind is None:
        kind = _KIND_OF_ORIGIN.get(origin.strip().upper(), "other")
    return kind


def source_of(source: str | None) -> str:
    """The `source` attribute: a URI-reference, `/postbacks/<source label>` (percent-encoded;
    `/postbacks` when the raw record named no source)."""
    if source is None:
        return SOURCE_PREFIX
    return f"{SOURCE_PREFIX}/{quote(source, safe='')}"


def _shared(source: str | None, origin: str, status: Status) -> tuple[tuple[str, bytes], ...]:
    """The headers that events of one source and kind share, encoded once per combination.

    Origins and sources are text from outside: long ones (never a real one) skip the cache, so
    that nobody can fill it with large keys.
    """
    if len(origin) > _CACHED_MAX_CHARS or (source is not None and len(source) > _CACHED_MAX_CHARS):
        return _shared_uncached(source, origin, status)
    return _shared_cached(source, origin, status)


def _shared_uncached(
    source: str | None, origin: str, status: Status
) -> tuple[tuple[str, bytes], ...]:
    return (
        ("ce_specversion", _SPECVERSION),
        ("ce_source", source_of(source).encode()),
        ("ce_type", _TYPES[kind_of(origin, status)]),
        ("ce_dataschema", _DATASCHEMA),
        ("content-type", _CONTENT_TYPE),
    )


_shared_cached: Final = functools.lru_cache(maxsize=1024)(_shared_uncached)
_CACHED_MAX_CHARS: Final = 64


def headers(event: Event) -> list[tuple[str, bytes]]:
    """The record headers of `event`: `ce_*` attributes and `content-type`.

    `ce_time` is when the edge received the postback (absent if unknown), `ce_subject` the
    tracking id (absent without one); `ce_id` is the `event_id`, so sinks upsert on it.
    """
    shared = _shared(event["source"], event["origin"], event["status"])
    received_at = event["received_at"]
    tracking_id = event["tracking_id"]
    if received_at is not None and tracking_id:  # nearly every event
        return [
            *shared,
            ("ce_id", event["event_id"].encode()),
            ("ce_time", received_at.encode()),
            ("ce_subject", tracking_id.encode()),
        ]
    result = [*shared, ("ce_id", event["event_id"].encode())]
    if received_at is not None:
        result.append(("ce_time", received_at.encode()))
    if tracking_id:
        result.append(("ce_subject", tracking_id.encode()))
    return result
