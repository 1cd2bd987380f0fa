"""The raw record: the body untouched, request facts in headers, absent facts left out."""

from __future__ import annotations

from ingest.records import build_record


def test_the_body_is_kept_verbatim_with_the_request_facts_in_headers() -> None:
    """Consumers and replays see exactly what the provider sent, plus when and from whom."""
    body = b"\xff not json \x00"
    record = build_record(
        body,
        source="mo",
        received_at_ms=1_700_000_000_123,
        client_addr="203.0.113.5",
        request_id="req-1",
        content_type=b"application/json; charset=utf-8",
        user_agent=b"provider/2",
    )
    assert record.value is body
    assert record.timestamp_ms == 1_700_000_000_123
    assert dict(record.headers) == {
        "received-at": b"1700000000123",
        "source": b"mo",
        "client-addr": b"203.0.113.5",
        "request-id": b"req-1",
        "content-type": b"application/json; charset=utf-8",
        "user-agent": b"provider/2",
    }


def test_headers_the_request_did_not_carry_are_absent_not_empty() -> None:
    """A missing Content-Type stays missing, so consumers can tell it from an empty one."""
    record = build_record(
        b"{}",
        source="default",
        received_at_ms=1,
        client_addr="127.0.0.1",
        request_id="r",
        content_type=None,
        user_agent=None,
    )
    assert {name for name, _ in record.headers} == {
        "received-at",
        "source",
        "client-addr",
        "request-id",
    }
