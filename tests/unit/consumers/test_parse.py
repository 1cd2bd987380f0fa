"""Parsing: both wire formats end in one v2-named field mapping, or in one exception type."""

from __future__ import annotations

import re

import pytest

from consumers.dlq import DeadLetterReason
from consumers.processor.parse import MAX_DEPTH, REASONS, Notification, Unparseable, parse
from testkit.samples import all_malformed, all_valid, load

# Why each malformed sample must be refused, decided from the sample itself.
EXPECTED_REASONS = {
    "malformed/api_error_response": "missing_origin",
    "malformed/array": "not_an_object",
    "malformed/doctype_entities": "xml_doctype_forbidden",
    "malformed/empty": "empty_body",
    "malformed/garbage": "invalid_utf8",
    "malformed/invalid_utf8": "invalid_utf8",
    "malformed/missing_code": "missing_code",
    "malformed/missing_origin": "missing_origin",
    "malformed/truncated": "invalid_json",
    "malformed/unclosed_tag": "invalid_xml",
    "malformed/unknown_root": "unknown_root",
    "malformed/whitespace": "empty_body",
}


def refusal(body: bytes, content_type: str | None = None) -> Unparseable:
    with pytest.raises(Unparseable) as caught:
        parse(body, content_type)
    return caught.value


@pytest.mark.parametrize(("kind", "body"), all_valid(), ids=[kind for kind, _ in all_valid()])
def test_every_valid_sample_parses_with_its_format(kind: str, body: bytes) -> None:
    """Every documented kind, in either format, becomes a notification tagged with its format."""
    notification = parse(body)
    if kind.startswith("v2/"):
        expected = "json_v2"
    elif body.lstrip().startswith(b"<postback"):
        expected = "xml_sinch"
    else:
        expected = "xml_v1"
    assert notification.input_format == expected
    assert notification.origin == notification.fields["origin"]
    assert notification.code == notification.fields["code"]


def test_every_malformed_sample_has_a_stated_reason() -> None:
    """The malformed samples and the table of expected reasons stay in step."""
    assert {kind for kind, _ in all_malformed()} == set(EXPECTED_REASONS)


@pytest.mark.parametrize(
    ("kind", "body"), all_malformed(), ids=[kind for kind, _ in all_malformed()]
)
def test_malformed_samples_are_refused_with_their_reason(kind: str, body: bytes) -> None:
    """A body that cannot be an event is refused with a stable, listed reason (a DLQ header)."""
    error = refusal(body)
    assert error.reason == EXPECTED_REASONS[kind]
    assert error.reason in REASONS
    assert str(error).startswith(error.reason)


def test_reasons_are_short_snake_case_labels() -> None:
    """Reasons are used as metric labels and header values, so they are plain and unique."""
    assert len(set(REASONS)) == len(REASONS)
    for reason in REASONS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", reason)


def test_detail_is_bounded() -> None:
    """A huge detail cannot bloat a dead-letter header."""
    error = Unparseable(DeadLetterReason.INVALID_JSON, "x" * 10_000)
    assert len(error.detail) <= 200


# ------------------------------------------------------------------------------------ v2 JSON


def test_json_values_are_kept_as_given() -> None:
    """v2 fields keep the provider's names and string values; operator ids keep leading zeros."""
    fields = parse(load("v2/sms_mt_n202")).fields
    assert fields["tracking-id"] == "U01TXzkxMjM0NTY3"
    assert fields["operator-id"] == "0001470"
    assert fields["operator-name"] == "AT&T"
    assert fields["timestamp"] == "2024-03-05T14:22:47.310552+00:00"


def test_trackingid_spelling_is_read_as_tracking_id() -> None:
    """MMS MT postbacks that spell it `trackingid` still yield the tracking id under one name."""
    notification = parse(load("v2/mms_mt_trackingid"))
    assert notification.fields["tracking-id"] == "TU1TXzU5Nzg3OQ=="
    assert "trackingid" not in notification.fields


def test_both_tracking_spellings_are_both_kept() -> None:
    """When both spellings arrive, neither value is lost."""
    body = b'{"origin":"MMS_MT","code":"N101","tracking-id":"a","trackingid":"b"}'
    fields = parse(body).fields
    assert fields["tracking-id"] == "a"
    assert fields["trackingid"] == "b"


def test_unknown_json_fields_are_kept() -> None:
    """Fields the documentation does not list survive parsing untouched."""
    fields = parse(load("v2/sms_mt_n202_extra_field")).fields
    assert fields["handset"] == "iphone12"
    assert fields["delivery-attempts"] == "2"


def test_json_lists_keep_their_shape() -> None:
    """MMS MO content and copy-to arrive as lists of one-key objects, as the provider sends."""
    fields = parse(load("v2/mms_mo_n401_sinch")).fields
    assert fields["content"] == [
        {"file": "https://media.example.net/mo-content/file1.jpg"},
        {"file": "https://media.example.net/mo-content/file2.txt"},
    ]
    assert fields["copy-to"] == [{"number": "17745550002"}, {"number": "17745550003"}]


def test_pretty_printed_json_with_bom_parses() -> None:
    """Whitespace and a UTF-8 byte-order mark in front of the object do not matter."""
    body = b"\xef\xbb\xbf\n  " + load("v2/sms_mo_n211")
    assert parse(body).fields["message-text"] == "STOP"


def test_format_is_read_from_the_body_not_the_label() -> None:
    """A JSON body labelled text/xml (or unlabelled) is still read as JSON, and vice versa."""
    assert parse(load("v2/sms_mt_n202"), "text/xml").input_format == "json_v2"
    assert parse(load("v1/sms_mt_n202"), "application/json").input_format == "xml_v1"
    assert parse(load("v2/sms_mt_n202"), "application/x-www-form-urlencoded").code == "N202"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'"just a string"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"origin":"SMS_MT","code":"N202",}', "invalid_json"),
        (b'{"origin":"SMS_MT","code":"N202"} trailing', "invalid_json"),
        (b'{"origin":"SMS_MT","code":"N202","text":"caf\xc3"}', "invalid_utf8"),
        (b'{"origin":"","code":"N202"}', "missing_origin"),
        (b'{"origin":"   ","code":"N202"}', "missing_origin"),
        (b'{"origin":7,"code":"N202"}', "missing_origin"),
        (b'{"origin":"SMS_MT","code":null}', "missing_code"),
        (b'{"origin":"SMS_MT","code":["N202"]}', "missing_code"),
    ],
)
def test_json_that_cannot_be_a_notification_is_refused(body: bytes, reason: str) -> None:
    """Non-objects, syntax errors, bad UTF-8 and missing discriminators each get their reason."""
    assert refusal(body).reason == reason


def test_json_nested_too_deep_is_refused() -> None:
    """Nesting beyond MAX_DEPTH is refused here, before identity or serialisation can choke."""
    deep = b'{"origin":"SMS_MT","code":"N202","x":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    assert refusal(deep).reason == "invalid_json"
    shallow = b'{"origin":"SMS_MT","code":"N202","x":[[[["ok"]]]]}'
    assert parse(shallow).fields["x"] == [[[["ok"]]]]


# ------------------------------------------------------------------------------------- v1 XML


def test_v1_nodes_map_to_v2_names() -> None:
    """v1 node names become the v2 keys of postback-formats.md §4; leading zeros survive."""
    fields = parse(load("v1/mms_mt_n102")).fields
    assert fields["origin"] == "MMS_MT"
    assert fields["code"] == "N102"
    assert fields["sent-as"] == "MMS"
    assert fields["status"] == "Message Sent/Delivered"
    assert fields["mms-id"] == "40211"
    assert fields["tracking-id"] == "TU1TXzcwMTIzNDU2"
    assert fields["operator-id"] == "0001570"
    assert fields["timestamp"] == "2024-03-05T09:23:12-05:00"


def test_v1_sms_mo_names() -> None:
    """SMS MO's TEXT, RECEIVED and TRANSACTIONID become message-text, timestamp, tracking-id."""
    fields = parse(load("v1/sms_mo_n211")).fields
    assert fields["message-text"] == "STOP"
    assert fields["timestamp"] == "2024-03-05T09:25:03-05:00"
    assert fields["tracking-id"] == "604KD-11833-720QP-915C2"


def test_v1_mms_mo_names_and_content() -> None:
    """SUBJECT, KEYWORD and CONTENT/FILE become message-subject, keyword and content[].file."""
    fields = parse(load("v1/mms_mo_n401")).fields
    assert fields["message-subject"] == "Receipt"
    assert fields["keyword"] == "photo"
    assert fields["content"] == [{"file": "https://media.example.net/mo/a8Kq2ZtP/1.jpg"}]


def test_v1_status_details_from_mask_and_unknown_nodes() -> None:
    """STATUSDETAILS and FROM_MASK map; nodes with no v2 name are kept under kebab names."""
    assert parse(load("v1/mms_mt_e101")).fields["status-details"] == (
        "Error fetching dynamic content"
    )
    n201 = parse(load("v1/sms_mt_n201")).fields
    assert n201["from-mask"] == "ACMEALERTS"
    assert n201["aggregator-id"] == "20417-55102-88313-10442-90210"
    n102 = parse(load("v1/mms_mt_n102")).fields
    assert (n102["handset"], n102["os"]) == ("iphone12", "iOS")
    assert parse(load("v1/mms_mt_e002")).fields["audio-name"] == "jingle.mp3"


def test_generate_pass_statuscode_is_the_code() -> None:
    """GENERATE_PASS carries STATUSCODE for CODE; schema attributes on the root are ignored."""
    notification = parse(load("v1/generate_pass_n801"))
    assert notification.origin == "GENERATE_PASS"
    assert notification.code == "N801"
    assert notification.fields["serial-number"] == "5294CE37878AE-112613-113711"
    assert not any(key.startswith(("xmlns", "xsi", "{")) for key in notification.fields)


def test_notification_wrapper_reads_like_the_flat_form() -> None:
    """The NOTIFICATION-wrapped MMS MO yields the same fields as a flat POSTBACK would."""
    wrapped = parse(load("v1/mms_mo_n401_notification"))
    assert wrapped.input_format == "xml_v1"
    assert wrapped.origin == "MMS_MO"
    assert wrapped.fields["tracking-id"] == "MMS_MO_iLnCRrL6"
    assert wrapped.fields["content"] == [
        {"file": "https://media.example.net/mo/iLnCRrL6/1.jpg"},
        {"file": "https://media.example.net/mo/iLnCRrL6/2.3gp"},
        {"file": "https://media.example.net/mo/iLnCRrL6/3.txt"},
    ]
    assert "notification" not in wrapped.fields


def test_sinch_dialect_uses_v2_names() -> None:
    """The lower-case Sinch <postback> dialect already uses v2 names; an empty subject is ""."""
    notification = parse(load("v1/mms_mo_n401_sinch"))
    assert notification.input_format == "xml_sinch"
    fields = notification.fields
    assert fields["tracking-id"] == "MMS_MO_iLnCRrL6"
    assert fields["operator-id"] == "31002"
    assert fields["message-subject"] == ""
    assert fields["content"] == [
        {"file": "https://media.example.net/mo-content/file1.jpg"},
        {"file": "https://media.example.net/mo-content/file2.txt"},
    ]


def test_xml_text_is_kept_exactly() -> None:
    """MO text is the subscriber's words: escapes are decoded, spacing is not touched."""
    body = (
        b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE>"
        b"<TEXT>  Tom &amp; Jerry &lt;3 \xc3\xa9  </TEXT></POSTBACK>"
    )
    assert parse(body).fields["message-text"] == "  Tom & Jerry <3 \u00e9  "


def test_conflicting_v1_nodes_keep_both_values() -> None:
    """TRACKINGID and TRANSACTIONID both map to tracking-id: the first wins, the other is kept."""
    body = (
        b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE>"
        b"<TRACKINGID>first</TRACKINGID><TRANSACTIONID>second</TRANSACTIONID></POSTBACK>"
    )
    fields = parse(body).fields
    assert fields["tracking-id"] == "first"
    assert fields["transactionid"] == "second"


def test_form_encoded_xml_field_is_read() -> None:
    """XML sent the v1-request way, in an `xml` form field, is read like a raw XML body."""
    body = (
        b"xml=%3CPOSTBACK%3E%3CORIGIN%3ESUB%3C%2FORIGIN%3E%3CCODE%3EN302%3C%2FCODE%3E"
        b"%3CMOBILE%3E14155550123%3C%2FMOBILE%3E%3C%2FPOSTBACK%3E"
    )
    notification = parse(body, "application/x-www-form-urlencoded")
    assert (notification.origin, notification.code) == ("SUB", "N302")
    assert notification.fields["mobile"] == "14155550123"


def test_latin1_declared_xml_parses() -> None:
    """An XML body that declares ISO-8859-1 is decoded as such, not refused as bad UTF-8."""
    body = (
        b"<?xml version='1.0' encoding='ISO-8859-1'?><POSTBACK><ORIGIN>SMS_MO</ORIGIN>"
        b"<CODE>N211</CODE><TEXT>caf\xe9</TEXT></POSTBACK>"
    )
    assert parse(body).fields["message-text"] == "caf\u00e9"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE POSTBACK SYSTEM "file:///etc/passwd"><POSTBACK/>',
            "xml_doctype_forbidden",
        ),
        (b'<!ENTITY x "y"><POSTBACK/>', "xml_doctype_forbidden"),
        ("<POSTBACK><ORIGIN>SMS_MO</ORIGIN></POSTBACK>".encode("utf-16"), "invalid_utf8"),
        ("<POSTBACK><ORIGIN>SMS_MO</ORIGIN></POSTBACK>".encode("utf-16-le"), "invalid_xml"),
        (b'<?xml version="1.0" encoding="cp037"?><POSTBACK/>', "invalid_xml"),
        (b'<?xml version="1.0" encoding="shift_jis"?><POSTBACK/>', "invalid_xml"),
        (b'<?xml version="1.0" encoding="\xff\xfe"?><POSTBACK/>', "invalid_xml"),
        (b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN>", "invalid_xml"),
        (b"<POSTBACK><TEXT>\xff</TEXT></POSTBACK>", "invalid_utf8"),
        (b"<RESPONSE><ORIGIN>SMS_MO</ORIGIN><CODE>N211</CODE></RESPONSE>", "unknown_root"),
        (b"<POSTBACK><ORIGIN/><CODE>N211</CODE></POSTBACK>", "missing_origin"),
        (
            b"<POSTBACK><ORIGIN>A</ORIGIN><ORIGIN>B</ORIGIN><CODE>N1</CODE></POSTBACK>",
            "missing_origin",
        ),
        (b"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE></CODE></POSTBACK>", "missing_code"),
        (b"xml=", "empty_body"),
    ],
)
def test_xml_that_cannot_be_a_notification_is_refused(body: bytes, reason: str) -> None:
    """Entity tricks, unscreenable encodings, broken XML and foreign roots are all refused."""
    assert refusal(body).reason == reason


def test_doctype_is_refused_before_any_expansion() -> None:
    """A billion-laughs body is refused by a byte scan, so no entity is ever expanded."""
    levels = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)
    )
    body = f"<?xml version='1.0'?><!DOCTYPE POSTBACK [{levels}]><POSTBACK>&l9;</POSTBACK>"
    assert refusal(body.encode()).reason == "xml_doctype_forbidden"


def test_notification_is_immutable() -> None:
    """A notification is a value: steps downstream cannot reassign its parts."""
    notification = parse(load("v2/sms_mt_n202"))
    assert isinstance(notification, Notification)
    with pytest.raises(AttributeError):
        notification.code = "E202"  # type: ignore[misc]
