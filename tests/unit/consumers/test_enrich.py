"""Enrichment: every parsed notification becomes one documented event; nothing is lost."""

from __future__ import annotations

import orjson
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.events.model import SCHEMA_VERSION
from consumers.processor.enrich import (
    enrich,
    number_facts,
    parse_international,
    region_and_type,
    utc_timestamp,
)
from consumers.processor.identity import digest, event_id
from consumers.processor.parse import parse
from consumers.processor.rawmeta import RawMeta
from testkit.samples import all_valid, load

# 2024-03-05T14:22:50Z, a few seconds after most samples' provider timestamps.
RECEIVED_AT_MS = 1_709_648_570_000
META = RawMeta(
    topic="postbacks.raw",
    partition=4,
    offset=981,
    received_at_ms=RECEIVED_AT_MS,
    source="skycore-prod",
    content_type="application/json",
)


def event_of(body: bytes, meta: RawMeta = META) -> dict[str, object]:
    notification = parse(body)
    return dict(enrich(notification, meta, digest(notification)))


# kind -> (status, is_final, is_error, sent_as, tracking_id), read off postback-formats.md.
EXPECTED = {
    "v2/device_discovery_n502": ("delivered", True, False, None, "TU1TXzcwMTIzNDU3"),
    "v2/mms_mo_n401": ("received", True, False, None, "MMSMOa8Kq2ZtP"),
    "v2/mms_mo_n401_sinch": ("received", True, False, None, "mo123xyz"),
    "v2/mms_mt_e002": ("transcoding_failed", True, True, None, None),
    "v2/mms_mt_e011": ("content_invalid", True, True, None, "TU1TXzcwMTIzNDYz"),
    "v2/mms_mt_e101": ("failed", True, True, "MMS", "TU1TXzcwMTIzNDYw"),
    "v2/mms_mt_e102": ("rejected", True, True, "MMS", "TU1TXzcwMTIzNDYx"),
    "v2/mms_mt_n003": ("transcoded", True, False, None, None),
    "v2/mms_mt_n013": ("transcoded", False, False, None, "TU1TXzcwMTIzNDYy"),
    "v2/mms_mt_n101": ("sent", False, False, "MMS", "TU1TXzcwMTIzNDU2"),
    "v2/mms_mt_n102": ("delivered", True, False, "MMS", "TU1TXzcwMTIzNDU2"),
    "v2/mms_mt_n102_fallback_sms": ("delivered", True, False, "SMS", "TU1TXzcwMTIzNDU3"),
    "v2/mms_mt_n103": ("expired", True, True, "MMS", "TU1TXzcwMTIzNDU5"),
    "v2/mms_mt_n202_fallback": ("delivered", True, False, "SMS", "TU1TXzcwMTIzNDU4"),
    "v2/mms_mt_trackingid": ("sent", False, False, "MMS", "TU1TXzU5Nzg3OQ=="),
    "v2/mms_mt_unknown_code": ("unknown", None, None, None, "TU1TXzcwMTIzNDU2"),
    "v2/sms_mo_n211": ("received", True, False, None, "smsmo4f1c2a9b7e"),
    "v2/sms_mt_e201": ("failed", True, True, "SMS", "U01TXzkxMjM0NTY4"),
    "v2/sms_mt_e202": ("rejected", True, True, "SMS", "U01TXzkxMjM0NTY5"),
    "v2/sms_mt_n201": ("sent", False, False, "SMS", "U01TXzkxMjM0NTY3"),
    "v2/sms_mt_n202": ("delivered", True, False, "SMS", "U01TXzkxMjM0NTY3"),
    "v2/sms_mt_n202_alphanumeric": ("delivered", True, False, "SMS", "U01TXzkxMjM0NTcw"),
    "v2/sms_mt_n202_extra_field": ("delivered", True, False, "SMS", "U01TXzkxMjM0NTcx"),
    "v1/generate_pass_n801": ("pass_generated", True, False, None, None),
    "v1/mms_mo_n401": ("received", True, False, None, "MMS_MO_a8Kq2ZtP"),
    "v1/mms_mo_n401_notification": ("received", True, False, None, "MMS_MO_iLnCRrL6"),
    "v1/mms_mo_n401_sinch": ("received", True, False, None, "MMS_MO_iLnCRrL6"),
    "v1/mms_mt_e002": ("transcoding_failed", True, True, None, None),
    "v1/mms_mt_e101": ("failed", True, True, None, "TU1TXzcwMTIzNDU4"),
    "v1/mms_mt_n003_savemms": ("transcoded", True, False, None, None),
    "v1/mms_mt_n102": ("delivered", True, False, "MMS", "TU1TXzcwMTIzNDU2"),
    "v1/mms_mt_n102_expired": ("expired", True, True, "MMS", "TU1TXzcwMTIzNDU5"),
    "v1/mms_mt_n102_rejected": ("rejected", True, True, "MMS", "TU1TXzcwMTIzNDYx"),
    "v1/mms_mt_n202_fallback": ("delivered", True, False, "SMS", "TU1TXzcwMTIzNDU4"),
    "v1/sms_mo_n211": ("received", True, False, None, "604KD-11833-720QP-915C2"),
    "v1/sms_mt_e202_expired": ("expired", True, True, "SMS", "U01TXzkxMjM0NTY5"),
    "v1/sms_mt_n201": ("sent", False, False, "SMS", "U01TXzkxMjM0NTY3"),
    "v1/sms_mt_n202": ("delivered", True, False, "SMS", "U01TXzkxMjM0NTY3"),
    "v1/sub_n301": ("subscribed", True, False, None, None),
}


def test_every_valid_sample_has_an_expectation() -> None:
    """New samples come with a stated expectation, so none is checked only by the schema."""
    assert {kind for kind, _ in all_valid()} == set(EXPECTED)


@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_every_kind_gets_its_documented_meaning(kind: str, body: bytes) -> None:
    """Status, finality, error-ness, sent-as and tracking id match the provider's documentation."""
    event = event_of(body)
    actual = (
        event["status"],
        event["is_final"],
        event["is_error"],
        event["sent_as"],
        event["tracking_id"],
    )
    assert actual == EXPECTED[kind]


@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_every_event_round_trips_through_orjson(kind: str, body: bytes) -> None:
    """The runtime serialises events with orjson as they are: plain JSON types only."""
    event = event_of(body)
    assert orjson.loads(orjson.dumps(event)) == event


def test_event_carries_identity_lineage_and_edge_facts() -> None:
    """event_id comes from the digest; lineage and source come from where the record was read."""
    notification = parse(load("v2/sms_mt_n202"))
    identity_digest = digest(notification)
    event = enrich(notification, META, identity_digest)
    assert event["schema_version"] == SCHEMA_VERSION
    assert event["event_id"] == event_id(identity_digest)
    assert event["lineage"] == {"topic": "postbacks.raw", "partition": 4, "offset": 981}
    assert event["source"] == "skycore-prod"
    assert event["input_format"] == "json_v2"
    assert event["received_at"] == "2024-03-05T14:22:50.000000Z"


def test_v2_sms_dlr_fields() -> None:
    """A v2 DLR's documented fields land in their event fields, operator id zero-padded."""
    event = event_of(load("v2/sms_mt_n202"))
    assert event["origin"] == "SMS_MT"
    assert event["code"] == "N202"
    assert event["code_description"] == "SMS delivered"
    assert event["status_text"] == "Delivered"
    assert event["operator_id"] == "0001470"
    assert event["operator_name"] == "AT&T"
    assert event["campaign_ref"] == "spring-promo"
    assert event["from"] == "60856"
    assert event["to"] == "14155550123"
    assert event["extra"] == {}


def test_mms_fields() -> None:
    """Client reference, status details and MMS id are carried as given."""
    event = event_of(load("v2/mms_mt_n101"))
    assert event["client_reference"] == "order-88412"
    assert event["status_details"] == "Message Sent"
    assert event_of(load("v2/mms_mt_n003"))["mms_id"] == "35890"
    assert event_of(load("v1/mms_mt_n102"))["mms_id"] == "40211"


def test_inbound_message_fields() -> None:
    """MO text, subject, keyword, content files and copy-to recipients are all in the event."""
    sms = event_of(load("v2/sms_mo_n211"))
    assert sms["message_text"] == "STOP"
    mms = event_of(load("v2/mms_mo_n401_sinch"))
    assert mms["message_subject"] == "Question"
    assert mms["keyword"] == "INFO"
    assert mms["operator_id"] == "310012"
    assert mms["content_files"] == [
        "https://media.example.net/mo-content/file1.jpg",
        "https://media.example.net/mo-content/file2.txt",
    ]
    assert mms["copy_to"] == ["17745550002", "17745550003"]
    assert event_of(load("v1/mms_mo_n401_notification"))["content_files"] == [
        "https://media.example.net/mo/iLnCRrL6/1.jpg",
        "https://media.example.net/mo/iLnCRrL6/2.3gp",
        "https://media.example.net/mo/iLnCRrL6/3.txt",
    ]


def test_absent_lists_are_empty() -> None:
    """content_files and copy_to are always lists, empty when the postback has none."""
    event = event_of(load("v2/sms_mt_n202"))
    assert event["content_files"] == []
    assert event["copy_to"] == []


def test_v1_and_v2_of_one_dlr_agree() -> None:
    """The same SMS delivery in v1 XML and v2 JSON yields the same facts (not the same id)."""
    v1 = event_of(load("v1/sms_mt_n202"))
    v2 = event_of(load("v2/sms_mt_n202"))
    for field in ("origin", "code", "status", "is_final", "is_error", "tracking_id", "from", "to"):
        assert v1[field] == v2[field], field
    assert v1["operator_id"] == v2["operator_id"] == "0001470"
    assert v1["input_format"] == "xml_v1"
    assert v1["event_id"] != v2["event_id"]


def test_unknown_fields_are_kept_in_extra() -> None:
    """Fields the schema has no place for are kept, under their names, values as given."""
    assert event_of(load("v2/sms_mt_n202_extra_field"))["extra"] == {
        "handset": "iphone12",
        "delivery-attempts": "2",
    }
    assert event_of(load("v1/sub_n301"))["extra"] == {
        "mobile": "14155550123",
        "campaign-id": "1478",
        "sub-id": "656700",
    }


def test_unknown_code_is_still_an_event() -> None:
    """A code not in the table yields status "unknown", with the status text kept."""
    event = event_of(load("v2/mms_mt_unknown_code"))
    assert event["status"] == "unknown"
    assert event["code"] == "N104"
    assert event["code_description"] is None
    assert event["status_text"] == "Read"


def test_wrong_shaped_known_fields_go_to_extra() -> None:
    """A known field in a shape we cannot read is null in the event and kept in extra."""
    body = orjson.dumps(
        {
            "origin": "MMS_MO",
            "code": "N401",
            "to": ["60856", "60857"],
            "tracking-id": {"id": "x"},
            "content": [{"file": "https://a/1.jpg"}, 7, {"url": "https://a/2.jpg"}],
            "copy-to": "17745550002",
        }
    )
    event = event_of(body)
    assert event["to"] is None
    assert event["to_number_type"] is None
    assert event["tracking_id"] is None
    assert event["content_files"] == ["https://a/1.jpg"]
    assert event["copy_to"] == []
    assert event["extra"] == {
        "to": ["60856", "60857"],
        "tracking-id": {"id": "x"},
        "content": [{"file": "https://a/1.jpg"}, 7, {"url": "https://a/2.jpg"}],
        "copy-to": "17745550002",
    }


def test_json_numbers_and_booleans_are_read_as_text() -> None:
    """Sinch calls operator ids integers: 31002 still reads "31002"."""
    body = b'{"origin":"MMS_MO","code":"N401","operator-id":31002,"mms-id":40211.0,"keyword":true}'
    event = event_of(body)
    assert event["operator_id"] == "31002"
    assert event["mms_id"] == "40211.0"
    assert event["keyword"] == "true"
    assert event["extra"] == {}


def test_sent_as_is_inferred_only_where_certain() -> None:
    """SMS MT is always SMS; MMS MT N202 is the fallback SMS; elsewhere nothing is guessed."""
    assert event_of(load("v1/sms_mt_n202"))["sent_as"] == "SMS"
    assert event_of(load("v2/mms_mt_n202_fallback"))["sent_as"] == "SMS"
    assert event_of(load("v2/mms_mt_n003"))["sent_as"] is None
    assert event_of(load("v1/mms_mt_e101"))["sent_as"] is None


# -------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("number", "facts"),
    [
        ("4915112345678", ("DE", 49, "mobile")),
        ("14155550123", ("US", 1, "fixed_line_or_mobile")),
        ("18885551234", ("US", 1, "toll_free")),
        ("+4915112345678", ("DE", 49, "mobile")),
        ("004915112345678", ("DE", 49, "mobile")),
        ("447700900123", (None, 44, "unknown")),  # Ofcom drama range: not a real number
        ("60856", (None, None, "short_code")),
        ("28444", (None, None, "short_code")),
        ("Dunder Mifflin", (None, None, "alphanumeric")),
        ("ACME2024", (None, None, "alphanumeric")),
        ("999123456789", (None, None, "unknown")),  # no such country code
        ("12", (None, None, "short_code")),
        ("", (None, None, None)),
        (None, (None, None, None)),
        ("1" * 200, (None, None, "unknown")),
        ("x" * 200, (None, None, "alphanumeric")),
    ],
)
def test_number_facts(number: str | None, facts: tuple[object, ...]) -> None:
    """Numbers get region, calling code and type; short codes and senders never crash."""
    assert number_facts(number) == facts


def every_regions_numbers() -> list[str]:
    """The library's example number of every type in every region, a few digits changed (so
    that many stop being valid) and cut short or made long, as digits with country code."""
    numbers = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for phone_type in range(12):
            example = phonenumbers.example_number_for_type(region, phone_type)
            if example is None:
                continue
            digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            numbers.update({digits, digits[:-1], digits + "0", digits[:-2] + "99"})
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.add(
                phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            )
    return sorted(numbers)


def test_region_and_type_are_those_of_the_public_phonenumbers_functions() -> None:
    """Region and type are found in one pass over the number patterns, and agree with
    `region_code_for_number` and `number_type` for every region's numbers, valid or not (a
    library update that changes what the one pass relies on fails here)."""
    numbers = every_regions_numbers()
    assert len(numbers) > 2000
    for digits in numbers:
        parsed = phonenumbers.parse("+" + digits, None)
        assert parsed.country_code is not None
        public = (phonenumbers.region_code_for_number(parsed), phonenumbers.number_type(parsed))
        assert region_and_type(parsed, parsed.country_code) == public, digits


def public_parse(digits: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None


def test_parse_international_is_the_public_parse_for_every_regions_numbers() -> None:
    """The shortcut past the library's free-text parsing gives the same number (calling code,
    national number, Italian leading zeros) or the same refusal, valid numbers or not, with a
    national prefix written after the calling code, or too short or too long."""
    numbers = every_regions_numbers()
    numbers += ["1", "12", "123", "0044", "4401234567890", "390612345678", "3906" + "9" * 14]
    for digits in numbers:
        assert parse_international(digits) == public_parse(digits), digits


@given(st.text(alphabet="0123456789", min_size=1, max_size=24))
def test_parse_international_is_the_public_parse_for_any_digits(digits: str) -> None:
    assert parse_international(digits) == public_parse(digits)


def test_event_numbers_are_kept_as_given_with_facts() -> None:
    """The event keeps each number as sent, beside its region, calling code and type."""
    event = event_of(load("v2/sms_mt_n202_alphanumeric"))
    assert (event["from"], event["from_number_type"]) == ("Dunder Mifflin", "alphanumeric")
    assert event["from_region"] is None
    assert event["from_calling_code"] is None
    assert (event["to"], event["to_region"], event["to_calling_code"]) == (
        "4915112345678",
        "DE",
        49,
    )
    assert event["to_number_type"] == "mobile"


# ------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2021-01-26T18:00:07.990498+00:00", "2021-01-26T18:00:07.990498Z"),
        ("2021-02-01T23:35:54+00:00", "2021-02-01T23:35:54.000000Z"),
        ("2026-04-24T18:34:00Z", "2026-04-24T18:34:00.000000Z"),
        ("2013-11-05T05:41:08-05:00", "2013-11-05T10:41:08.000000Z"),
        ("2024-03-05T23:30:00.5+05:30", "2024-03-05T18:00:00.500000Z"),
        ("2024-03-05T14:22:47.310Z", "2024-03-05T14:22:47.310000Z"),
        ("2024-12-31T22:00:00-05:00", "2025-01-01T03:00:00.000000Z"),
        (" 2024-03-05T14:22:47+00:00 ", "2024-03-05T14:22:47.000000Z"),
    ],
)
def test_every_documented_timestamp_form_normalises_to_utc(given: str, utc: str) -> None:
    """Microseconds or none, Z or an offset: every form becomes UTC with six digits and Z."""
    assert utc_timestamp(given)[0] == utc


@pytest.mark.parametrize(
    "given",
    ["", "yesterday", "2024-03-05T14:22:47", "2024-03-05", "2024-13-05T14:22:47Z", "1709648567"],
)
def test_unreadable_or_zoneless_timestamps_are_null(given: str) -> None:
    """A timestamp we cannot place in time is null, never guessed (v1 used local offsets)."""
    assert utc_timestamp(given) == (None, None)


def test_unreadable_timestamp_keeps_the_original() -> None:
    """The provider's text survives in provider_timestamp_raw; the event is still made."""
    event = event_of(b'{"origin":"SMS_MO","code":"N211","timestamp":"05/03/2024 14:25"}')
    assert event["provider_timestamp"] is None
    assert event["provider_timestamp_raw"] == "05/03/2024 14:25"
    assert event["postback_lag_ms"] is None


def test_postback_lag_is_received_minus_provider_time() -> None:
    """Lag is edge receive time minus provider time: 14:22:50.000 - 14:22:47.310 = 2690 ms."""
    event = event_of(load("v2/sms_mt_n202"))
    assert event["provider_timestamp"] == "2024-03-05T14:22:47.310552Z"
    assert event["postback_lag_ms"] == 2690


def test_lag_across_offsets() -> None:
    """A v1 local-offset timestamp is compared in UTC: 09:22:47-05:00 is 14:22:47Z."""
    assert event_of(load("v1/sms_mt_n202"))["postback_lag_ms"] == 3000


def test_missing_receive_time_leaves_received_at_and_lag_null() -> None:
    """Without the edge's header there is no received_at and no lag, but still an event."""
    meta = RawMeta(topic="postbacks.raw", partition=0, offset=0)
    event = event_of(load("v2/sms_mt_n202"), meta)
    assert event["received_at"] is None
    assert event["postback_lag_ms"] is None
    assert event["source"] is None


def test_absurd_receive_time_is_null_not_a_crash() -> None:
    """A corrupt received-at header cannot stop the record from becoming an event."""
    meta = RawMeta(topic="t", partition=0, offset=0, received_at_ms=10**20)
    assert event_of(load("v2/sms_mt_n202"), meta)["received_at"] is None
