"""No body can crash the processor: each input ends as a valid event or as an `Unparseable`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.events.model import NUMBER_TYPES, load_schema
from consumers.processor.enrich import enrich, number_facts, utc_timestamp
from consumers.processor.identity import Identity, digest, digest_raw
from consumers.processor.parse import REASONS, Unparseable, parse
from consumers.processor.rawmeta import RawMeta

VALIDATOR = jsonschema.Draft202012Validator(load_schema())
META = RawMeta("postbacks.raw", 1, 2, 1_709_648_570_000, "fuzz", None)
FIELD_IDENTITY = Identity.from_fields(("origin", "tracking-id", "code", "status"))
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

V2_KEYS = [
    "origin",
    "code",
    "status",
    "status-details",
    "sent-as",
    "tracking-id",
    "trackingid",
    "client-reference",
    "campaign-ref",
    "mms-id",
    "from",
    "to",
    "from-mask",
    "operator-id",
    "operator-name",
    "message-text",
    "message-subject",
    "keyword",
    "content",
    "copy-to",
    "timestamp",
]
V1_TAGS = [
    "ORIGIN",
    "CODE",
    "STATUSCODE",
    "STATUS",
    "STATUSDETAILS",
    "SENTAS",
    "MMSID",
    "FROM",
    "TO",
    "FROM_MASK",
    "TRACKINGID",
    "TRANSACTIONID",
    "SPID",
    "TIMESTAMP",
    "RECEIVED",
    "TEXT",
    "SUBJECT",
    "KEYWORD",
    "CONTENT",
    "FILE",
    "NOTIFICATION",
    "HANDSET",
    "origin",
    "code",
    "tracking-id",
    "content",
    "file",
]
VALUES = st.one_of(
    st.sampled_from(
        ["SMS_MT", "MMS_MT", "MMS_MO", "N102", "E202", "N211", "Message Sent/Expired", "60856"]
    ),
    st.sampled_from(["17743199144", "+4915112345678", "Dunder Mifflin", "0001470", ""]),
    st.sampled_from(["2024-03-05T14:22:47.310552+00:00", "2026-04-24T18:34:00Z", "-05:00"]),
    st.text(max_size=30),
)

# Text XML 1.0 can carry: no control characters, no lone surrogates.
XML_TEXT = VALUES.filter(str.isprintable) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30
)


def event_or_refusal(
    body: bytes, content_type: str | None = None
) -> dict[str, object] | Unparseable:
    """Run one body through every pure step the runtime calls, as the runtime would."""
    try:
        notification = parse(body, content_type)
    except Unparseable as refused:
        refusal = refused
    else:
        FIELD_IDENTITY.digest(notification)
        event = enrich(notification, META, digest(notification))
        VALIDATOR.validate(event)
        assert orjson.loads(orjson.dumps(event)) == event
        return dict(event)
    assert refusal.reason in REASONS
    assert len(digest_raw(body)) == 16
    return refusal


@SETTINGS
@given(st.binary(max_size=1024), st.sampled_from([None, "application/json", "text/xml"]))
def test_arbitrary_bytes(body: bytes, content_type: str | None) -> None:
    """Random bytes, of any label, become an event or a dead letter; nothing else."""
    event_or_refusal(body, content_type)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    VALUES,
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["file", "number", "x"]) | st.text(max_size=5), children)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(V2_KEYS) | st.text(max_size=12), json_values, max_size=12),
    st.sampled_from(["SMS_MT", "MMS_MT", "SMS_MO", "MMS_MO", "SUB", ""]),
    st.sampled_from(["N101", "N102", "N202", "E202", "N999", "X", ""]),
)
def test_arbitrary_json_objects(document: dict[str, Any], origin: str, code: str) -> None:
    """Any JSON object, documented keys or not, any value types, ends as event or dead letter.

    Bodies are written by the standard library, so integers beyond 64 bits occur too.
    """
    event_or_refusal(json.dumps(document).encode())
    result = event_or_refusal(json.dumps({"origin": origin, "code": code, **document}).encode())
    if document.get("origin", origin) == origin and document.get("code", code) == code:
        assert isinstance(result, dict) == bool(origin.strip() and code.strip())


xml_tokens = st.one_of(
    st.sampled_from(V1_TAGS).map(lambda tag: f"<{tag}>"),
    st.sampled_from(V1_TAGS).map(lambda tag: f"</{tag}>"),
    st.sampled_from(V1_TAGS).map(lambda tag: f"<{tag}/>"),
    st.sampled_from(
        [
            "<POSTBACK>",
            "</POSTBACK>",
            "<postback>",
            "</postback>",
            "<?xml version='1.0'?>",
            '<?xml version="1.0" encoding="latin-1"?>',
            "<!DOCTYPE x>",
            '<!ENTITY a "b">',
            "&amp;",
            "&a;",
            "<![CDATA[<x>]]>",
            "<!-- c -->",
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
        ]
    ),
    VALUES,
)


@SETTINGS
@given(st.lists(xml_tokens, max_size=25), st.sampled_from(["utf-8", "latin-1"]))
def test_xml_ish_token_soup(tokens: list[str], encoding: str) -> None:
    """Tag soup built from v1 and Sinch node names never escapes as anything but a refusal."""
    event_or_refusal("".join(tokens).encode(encoding, errors="replace"))


@st.composite
def well_formed_postbacks(draw: st.DrawFn) -> bytes:
    """Well-formed XML with random documented and undocumented children and nesting."""

    def element(depth: int) -> str:
        tag = draw(
            st.sampled_from(V1_TAGS) | st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)
        )
        if depth > 0 and draw(st.booleans()):
            children = "".join(element(depth - 1) for _ in range(draw(st.integers(0, 3))))
            return f"<{tag}>{children}</{tag}>"
        return f"<{tag}>{escape(draw(XML_TEXT))}</{tag}>"

    root = draw(st.sampled_from(["POSTBACK", "postback", "RESPONSE"]))
    children = "".join(element(3) for _ in range(draw(st.integers(0, 8))))
    return f"<{root}>{children}</{root}>".encode()


@SETTINGS
@given(well_formed_postbacks())
def test_well_formed_xml_is_refused_only_for_content(body: bytes) -> None:
    """Well-formed XML is never "invalid": it is an event or lacks a root, origin or code."""
    result = event_or_refusal(body)
    if isinstance(result, Unparseable):
        assert result.reason in {"unknown_root", "missing_origin", "missing_code"}


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@SETTINGS
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.booleans(),
)
def test_any_offset_timestamp_normalises_to_the_same_instant(moment: datetime, zulu: bool) -> None:
    """Whatever the offset and precision, the UTC string and epoch ms name the same instant."""
    text = moment.isoformat()
    if zulu and moment.utcoffset() == timedelta(0):
        text = text[:-6] + "Z"
    utc = moment.astimezone(UTC)
    expected = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond:06d}Z"
    )
    epoch_ms = (utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert utc_timestamp(text) == (expected, epoch_ms)


@SETTINGS
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    st.integers(min_value=0, max_value=6),
    st.booleans(),
)
def test_timestamps_in_the_provider_forms_read_as_fromisoformat_reads_them(
    moment: datetime, fraction_digits: int, zulu: bool
) -> None:
    """Any fraction length (v2 sends six digits, v1 none, others three), Z or an offset: the
    same instant as Python's own ISO-8601 reading of the text."""
    text = moment.isoformat(timespec="seconds")[:19]
    if fraction_digits:
        text += "." + f"{moment.microsecond:06d}"[:fraction_digits]
    offset = moment.isoformat()[-6:]
    text += "Z" if zulu and offset == "+00:00" else offset
    parsed = datetime.fromisoformat(text)
    utc = parsed.astimezone(UTC)
    epoch_ms = (utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert utc_timestamp(text) == (
        utc.strftime("%Y-%m-%dT%H:%M:%S.%f").rjust(26, "0") + "Z",
        epoch_ms,
    )


@SETTINGS
@given(st.text(max_size=40) | st.from_regex(r"\+?[0-9 ()-]{0,20}", fullmatch=True))
def test_any_number_text_classifies(number: str) -> None:
    """Any sender or recipient text yields facts of the documented shapes, never an error."""
    region, calling_code, number_type = number_facts(number)
    assert region is None or (len(region) == 2 and region.isupper())
    assert calling_code is None or calling_code >= 1
    assert number_type in (*NUMBER_TYPES, None)
    assert (number_type is None) == (number == "")
