"""CloudEvents headers: each event record carries the attributes its body implies."""

from __future__ import annotations

import re

import pytest

from consumers.events.cloudevents import KINDS, headers, kind_of, source_of, type_of
from consumers.events.model import SCHEMA_ID, STATUSES, load_schema
from consumers.processor.enrich import enrich
from consumers.processor.identity import digest
from consumers.processor.parse import parse
from consumers.processor.rawmeta import RawMeta
from testkit.samples import all_valid, load

META = RawMeta("postbacks.raw", 0, 17, 1_709_648_570_000, "mt", "application/json")


def headers_of(body: bytes, meta: RawMeta = META) -> dict[str, bytes]:
    notification = parse(body)
    found = headers(enrich(notification, meta, digest(notification)))
    assert len({name for name, _ in found}) == len(found), "a header repeated"
    return dict(found)


def test_a_delivery_report_has_every_attribute() -> None:
    """id, source, type, time, subject, dataschema and content type, all from the event."""
    assert headers_of(load("v2/sms_mt_n202")) == {
        "ce_specversion": b"1.0",
        "ce_id": b"4eaa5e6188069e71eddf63b3ab22ad12",
        "ce_source": b"/postbacks/mt",
        "ce_type": b"postback.delivery.v2",
        "ce_time": b"2024-03-05T14:22:50.000000Z",
        "ce_subject": b"U01TXzkxMjM0NTY3",
        "ce_dataschema": b"urn:postback-pipeline:event:2",
        "content-type": b"application/json",
    }


def test_optional_attributes_are_left_out_when_unknown() -> None:
    """No tracking id, no subject; no receive time, no time; no source label, the edge's root."""
    found = headers_of(load("v2/mms_mt_n003"), RawMeta("postbacks.raw", 0, 0))

    assert "ce_subject" not in found
    assert "ce_time" not in found
    assert found["ce_source"] == b"/postbacks"
    assert found["ce_type"] == b"postback.transcoding.v2"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("v2/mms_mt_n102", "delivery"),
        ("v2/sms_mt_e201", "delivery"),
        ("v2/mms_mt_e002", "transcoding"),
        ("v2/mms_mt_e011", "transcoding"),
        ("v2/mms_mt_n013", "transcoding"),
        ("v2/sms_mo_n211", "inbound"),
        ("v1/mms_mo_n401", "inbound"),
        ("v1/sub_n301", "subscription"),
        ("v1/generate_pass_n801", "pass"),
    ],
)
def test_type_names_the_kind_of_notification(kind: str, expected: str) -> None:
    """Routers filter on type: delivery, transcoding, inbound, subscription, pass."""
    assert headers_of(load(kind))["ce_type"] == f"postback.{expected}.v2".encode()


def test_an_unknown_origin_is_of_kind_other() -> None:
    """A new origin from the provider still gets a documented type, and case does not matter."""
    assert kind_of("FAX_MT", "sent") == "other"
    assert kind_of("sms_mo", "received") == "inbound"
    assert {kind_of(origin, status) for origin in ("SMS_MT", "X") for status in STATUSES} <= set(
        KINDS
    )


def test_source_is_a_uri_reference_whatever_the_label() -> None:
    """Odd source labels (from records the edge did not write) are percent-encoded."""
    assert source_of("default") == "/postbacks/default"
    assert source_of("a b/c?") == "/postbacks/a%20b%2Fc%3F"
    assert headers_of(load("v2/sms_mt_n202"), META._replace(source="x" * 100))["ce_source"] == (
        b"/postbacks/" + b"x" * 100
    )


def test_dataschema_and_types_follow_the_schema_version() -> None:
    """A breaking schema change renames the types and the dataschema together."""
    assert load_schema()["$id"] == SCHEMA_ID
    assert headers_of(load("v2/sms_mt_n202"))["ce_dataschema"] == SCHEMA_ID.encode()
    assert type_of("delivery") == "postback.delivery.v2"


@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_every_sample_gets_valid_required_attributes(kind: str, body: bytes) -> None:
    """Every sample's record has the four required attributes, non-empty, and an RFC 3339 time."""
    found = headers_of(body)

    assert {"ce_specversion", "ce_id", "ce_source", "ce_type"} <= set(found)
    assert all(found.values())
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", found["ce_time"])
