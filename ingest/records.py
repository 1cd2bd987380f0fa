"""Builds the `postbacks.raw` record from the facts of one request. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from common import raw_record
from ingest.keys import partition_key


@dataclass(frozen=True, slots=True)
class RawRecord:
    key: bytes
    value: bytes
    headers: raw_record.Headers
    # The Kafka timestamp is the receive time, so `offsets_for_times` finds records by it
    # (replays by time range, dedupe-state restore).
    timestamp_ms: int


def build_record(
    body: bytes,
    *,
    source: str,
    received_at_ms: int,
    client_addr: str,
    request_id: str,
    content_type: bytes | None,
    user_agent: bytes | None,
) -> RawRecord:
    """The body goes in untouched; absent request headers are left out rather than faked."""
    headers: raw_record.Headers = [
        (raw_record.RECEIVED_AT, str(received_at_ms).encode()),
        (raw_record.SOURCE, source.encode()),
        (raw_record.CLIENT_ADDR, client_addr.encode()),
        (raw_record.REQUEST_ID, request_id.encode()),
    ]
    if content_type is not None:
        headers.append((raw_record.CONTENT_TYPE, content_type))
    if user_agent is not None:
        headers.append((raw_record.USER_AGENT, user_agent))
    return RawRecord(
        key=partition_key(body, raw_record.header_text(content_type)),
        value=body,
        headers=headers,
        timestamp_ms=received_at_ms,
    )
