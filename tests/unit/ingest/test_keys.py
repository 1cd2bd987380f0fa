"""Partition keys: one key for every retry the dedupe identity calls the same notification."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.identity import Identity, digest, event_id
from consumers.processor.parse import V1_NAMES, Unparseable, parse
from ingest.keys import MAX_KEY_BYTES, body_hash_key, partition_key
from testkit.samples import all_valid, content_type, load

FORM = "application/x-www-form-urlencoded"
BOM = "\ufeff"
STATUS_FIELDS = ("origin", "tracking-id", "code", "status")

# Tracking ids as the provider writes them: base64-ish, with '=', '_' and '-'.
tracking_ids = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=_-"),
    min_size=1,
    max_size=64,
)
# Field values, with what XML must escape and text beyond ASCII; no CR (XML turns it into LF).
values = st.text(alphabet=st.sampled_from("abcXYZ019 +-:/.'\"&<>é\t\n"), max_size=24)
# Optional fields, each with a v1 node of its own (or a kebab name the parser keeps).
OPTIONAL_FIELDS = ("status", "to", "from", "operator-id", "timestamp", "mms-id", "handset")
# v2 name -> the v1 nodes the parser maps to it (TRACKINGID and TRANSACTIONID, CODE and ...).
V1_NODES: dict[str, list[str]] = defaultdict(list)
for _node, _name in V1_NAMES.items():
    V1_NODES[_name].append(_node)

Rendering = tuple[bytes, str | None]  # (body, content type) as the edge receives them


@st.composite
def notifications(draw: st.DrawFn) -> dict[str, str]:
    """A notification as its v2 fields: origin, code, some other fields, maybe a tracking id
    (absent, usable, padded, with characters XML escapes, or unusable as a key)."""
    document = {
        "origin": draw(st.sampled_from(["SMS_MT", "MMS_MT", "SMS_MO", "MMS_MO"])),
        "code": draw(st.sampled_from(["N101", "N102", "N201", "N202", "E202", "N211"])),
    }
    for name in draw(st.lists(st.sampled_from(OPTIONAL_FIELDS), unique=True, max_size=5)):
        document[name] = draw(values)
    tracking_id = draw(
        st.none()
        | tracking_ids
        | tracking_ids.map(lambda value: f"  {value}\n")
        | st.tuples(tracking_ids, tracking_ids).map(lambda pair: f"{pair[0]}&{pair[1]}")
        | st.sampled_from(["", "   ", "x" * (MAX_KEY_BYTES + 1)])
    )
    if tracking_id is not None:
        document["tracking-id"] = tracking_id
    return document


def _shuffled(draw: st.DrawFn, document: dict[str, str]) -> list[tuple[str, str]]:
    return draw(st.permutations(list(document.items())))


def _spacing(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", " ", "\n", "\n    ", "\r\n\t"]))


@st.composite
def json_bodies(draw: st.DrawFn, document: dict[str, str]) -> str:
    """The document as v2 JSON, keys in any order, any spacing, escaped or not."""
    colon = draw(st.sampled_from([":", ": ", " :\t"]))
    comma = draw(st.sampled_from([",", ", ", ",\n  "]))
    ascii_only = draw(st.booleans())
    members = comma.join(
        json.dumps(name) + colon + json.dumps(value, ensure_ascii=ascii_only)
        for name, value in _shuffled(draw, document)
    )
    pad = _spacing(draw)
    return f"{_spacing(draw)}{{{pad}{members}{pad}}}{_spacing(draw)}"


# XML that a careless reader would take for the id, or that hides where the id element sits.
DECOYS = (
    "<!-- <TRACKINGID>decoy</TRACKINGID> -->",
    "<?note <tracking-id>decoy</tracking-id>?>",
    "<CONTENT><FILE>https://media.example.net/1.jpg</FILE><TRACKINGID>decoy</TRACKINGID></CONTENT>",
    "<SUBJECT/>",
    '<LABEL kind="a/>b">t/>x</LABEL>',
    "<NOTE><![CDATA[<TRACKINGID>decoy</TRACKINGID>]]></NOTE>",
    '<p:TRACKINGID xmlns:p="urn:example:p">decoy</p:TRACKINGID>',
    "<GROUP><ITEM>1</ITEM></GROUP>",
)


@st.composite
def xml_bodies(draw: st.DrawFn, document: dict[str, str], decoys: bool = False) -> str:
    """The document as v1 XML (v1 node names in any case, maybe in a NOTIFICATION wrapper) or
    in Sinch's dialect (v2 names), elements in any order, text escaped or in CDATA; with
    `decoys`, other XML between them and attributes on them."""
    sinch = draw(st.booleans())
    elements = []
    for name, value in _shuffled(draw, document):
        if sinch:
            node = draw(st.sampled_from([name, name.replace("-", "_"), name.title()]))
        else:
            node = draw(st.sampled_from(V1_NODES.get(name) or [name.upper().replace("-", "_")]))
            node = draw(st.sampled_from([node, node.lower(), node.title()]))
        text = draw(st.sampled_from([escape(value), f"<![CDATA[{value}]]>"])) if value else ""
        attributes = draw(st.sampled_from(["", " ", ' lang="en"'])) if decoys else ""
        elements.append(f"<{node}{attributes}>{text}</{node}>")
    for decoy in draw(st.lists(st.sampled_from(DECOYS), max_size=3)) if decoys else ():
        elements.insert(draw(st.integers(0, len(elements))), decoy)
    spacing = _spacing(draw)
    fields = spacing + spacing.join(elements) + spacing
    if not sinch and draw(st.booleans()):
        fields = f"{spacing}<NOTIFICATION>{fields}</NOTIFICATION>{spacing}"
    root = "postback" if sinch else "POSTBACK"
    namespace = draw(st.sampled_from(["", ' xmlns="urn:example:postback"']))
    declaration = draw(
        st.sampled_from(["", "<?xml version='1.0'?>", '<?xml version="1.0" encoding="UTF-8"?>\n'])
    )
    return f"{declaration}<{root}{namespace}>{fields}</{root}>"


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda escaped: escaped.group().lower(), text)


@st.composite
def renderings(draw: st.DrawFn, document: dict[str, str]) -> Rendering:
    """One postback of the document as a provider may send it: JSON or XML, behind a BOM or
    not, XML maybe form-encoded (`xml=`, or a form content type), any content type."""
    xml = draw(xml_bodies(document))
    if draw(st.booleans()):
        quoting: Callable[[str], str] = draw(st.sampled_from([quote_plus, quote]))
        encoded = quoting(xml)
        if draw(st.booleans()):
            encoded = _lower_escapes(encoded)
        if draw(st.booleans()):
            return f"source=mt&xml={encoded}".encode(), FORM
        return f"xml={encoded}".encode(), draw(st.sampled_from([FORM, None, "text/plain"]))
    text = draw(st.sampled_from([xml, draw(json_bodies(document))]))
    bom = draw(st.sampled_from(["", BOM]))
    kind = draw(st.sampled_from([None, "application/json", "text/xml", FORM]))
    return (bom + text).encode(), kind


def _parser_key(body: bytes) -> bytes | None:
    """The key the contract gives a body, from the parser's reading of it; None for an id
    the contract hashes by value (another test covers those)."""
    try:
        notification = parse(body)
    except Unparseable:
        return body_hash_key(body)
    if "tracking-id" not in notification.fields:
        return event_id(digest(notification)).encode()
    value = notification.fields["tracking-id"]
    key = value.strip().encode() if isinstance(value, str) else b""
    return key if 0 < len(key) <= MAX_KEY_BYTES else None


def _digest(identity: Identity, rendering: Rendering) -> bytes:
    return identity.digest(parse(*rendering))


def _keys_by_identity(identity: Identity, bodies: list[Rendering]) -> list[set[bytes]]:
    """For each notification the identity tells apart, the keys its postbacks got."""
    keys: dict[bytes, set[bytes]] = defaultdict(set)
    for rendering in bodies:
        keys[_digest(identity, rendering)].add(partition_key(*rendering))
    return list(keys.values())


@given(st.data())
def test_every_retry_the_identity_calls_the_same_gets_one_partition_key(
    data: st.DataObject,
) -> None:
    """A retry that differs only where the identity does not look (whitespace, key order, BOM,
    form encoding, XML dialect or escaping) gets its original's key, hence its partition."""
    document = data.draw(notifications())
    retries = [data.draw(renderings(document)) for _ in range(4)]
    identity = Identity()
    assert len({_digest(identity, retry) for retry in retries}) == 1, "not retries: a test bug"
    assert len({partition_key(*retry) for retry in retries}) == 1


@given(st.data())
def test_retries_a_field_identity_calls_the_same_get_one_partition_key(
    data: st.DataObject,
) -> None:
    """With DEDUPE_IDENTITY_FIELDS (which lists tracking-id), retries re-rendered with a fresh
    timestamp are one notification to the identity, and get one key."""
    document = {**data.draw(notifications()), "status": data.draw(values)}
    retried = {**document, "timestamp": data.draw(values)}
    bodies = [data.draw(renderings(version)) for version in (document, retried, retried)]
    for keys in _keys_by_identity(Identity.from_fields(STATUS_FIELDS), bodies):
        assert len(keys) == 1


@given(st.data())
def test_the_key_is_the_tracking_id_the_parser_reads(data: st.DataObject) -> None:
    """Comments, instructions, CDATA, attributes, namespaces or nested elements named like the
    id never make the key differ from the tracking id the processor's parser reads."""
    body = data.draw(xml_bodies(data.draw(notifications()), decoys=True)).encode()
    expected = _parser_key(body)
    if expected is not None:
        assert partition_key(body) == expected


# Fragments that move, hide, repeat or break an XML body's tracking id element.
FRAGMENTS = (
    b"<", b">", b"/", b"&amp;", b"&#65;", b"\r", b"\n", b" ", b"\xc3\xa9", b"tracking",
    b"<!-- c -->", b"<?x?>", b"<![CDATA[z]]>", b"<A>t</A>", b"<E/>", b'<C d="/>">q</C>',
    b"<NOTIFICATION>", b"</NOTIFICATION>", b"<TRACKINGID>", b"</TRACKINGID>", b"<TRACKINGID >",
    b"<TrackingId>", b"</TrackingId>", b"<transactionid>", b"</transactionid>",
    b"<p:TRACKINGID>", b"<N><TRACKINGID>d</TRACKINGID></N>",
)  # fmt: skip
xml_samples = [body for kind, body in all_valid() if kind.startswith("v1/")]


@settings(max_examples=300)
@given(
    st.sampled_from(xml_samples),
    st.lists(
        st.tuples(
            st.booleans(), st.integers(0, 999), st.sampled_from(FRAGMENTS), st.integers(0, 6)
        ),
        max_size=3,
    ),
)
def test_edited_xml_that_still_parses_is_keyed_as_the_parser_reads_it(
    body: bytes, edits: list[tuple[bool, int, bytes, int]]
) -> None:
    """However a documented XML body is cut or added to (between tags or anywhere), if the
    parser still reads it, the key is the tracking id it reads (or the notification's)."""
    edited = body
    for between_tags, where, fragment, cut in edits:
        places = [i + 1 for i, byte in enumerate(edited) if byte == ord(">")] or [0]
        if between_tags:
            at, cut = places[where % len(places)], 0
        else:
            at = where % (len(edited) + 1)
        edited = edited[:at] + fragment + edited[at + cut :]
    expected = _parser_key(edited)
    try:
        parse(edited)
    except Unparseable:
        return  # any function of the bytes agrees with an identity that is the bytes
    if expected is not None:
        assert partition_key(edited) == expected


@given(tracking_ids, st.sampled_from(["tracking-id", "trackingid"]))
def test_json_postbacks_are_keyed_by_their_tracking_id(value: str, name: str) -> None:
    """A v2 JSON body with a tracking id, in either spelling, is keyed by it."""
    body = json.dumps({"origin": "SMS_MT", "code": "N202", name: value}).encode()
    assert partition_key(body) == value.encode()


@given(tracking_ids, st.sampled_from(["TRACKINGID", "TRANSACTIONID", "tracking-id", "TrackingId"]))
def test_xml_postbacks_are_keyed_by_their_tracking_or_transaction_id(value: str, node: str) -> None:
    """v1 XML (and Sinch's dialect) bodies are keyed by TRACKINGID, TRANSACTIONID or tracking-id."""
    body = (
        f"<?xml version='1.0'?><POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
        f"<{node}>{value}</{node}><TO>14155550123</TO></POSTBACK>"
    ).encode()
    assert partition_key(body) == value.encode()


def test_every_sample_is_keyed_by_its_tracking_id_or_its_event_id() -> None:
    """Each documented postback gets its tracking id, or without one its event id: the key the
    processor gives its event, so the event stays in the raw record's partition number."""
    for kind, body in all_valid():
        notification = parse(body)
        tracking_id = notification.fields.get("tracking-id")
        expected = tracking_id.strip() if isinstance(tracking_id, str) else None
        key = partition_key(body, content_type(kind))
        assert key == (expected or event_id(digest(notification))).encode(), kind


def test_bom_and_form_bodies_are_keyed_by_their_tracking_id() -> None:
    """The id is found wherever the parser reads one: behind a UTF-8 BOM, in an `xml=` form
    field, or in a form body whose content type says so."""
    json_body = load("v2/sms_mt_n202")
    xml_body = load("v1/sms_mt_n202")
    json_id = parse(json_body).fields["tracking-id"]
    xml_id = parse(xml_body).fields["tracking-id"]
    assert partition_key(BOM.encode() + json_body) == str(json_id).encode()
    assert partition_key(BOM.encode() + xml_body) == str(xml_id).encode()
    assert partition_key(b"xml=" + quote_plus(xml_body).encode()) == str(xml_id).encode()
    form = b"source=mt&xml=" + quote(xml_body).encode()
    assert partition_key(form, FORM) == str(xml_id).encode()


def test_notifications_without_a_tracking_id_are_keyed_by_their_canonical_identity() -> None:
    """Two retries of an id-less notification, spaced and ordered differently, share a key:
    its event id under the default identity."""
    compact = b'{"origin":"MMS_MT","code":"N003","status":"Transcoded","mms-id":"40211"}'
    spaced = b'{ "mms-id": "40211",\n  "status": "Transcoded", "code": "N003", "origin": "MMS_MT" }'
    assert partition_key(compact) == partition_key(spaced)
    assert partition_key(compact) == event_id(digest(parse(spaced))).encode()


@given(st.binary(max_size=2048), st.sampled_from([None, FORM, "application/json"]))
def test_any_bytes_get_a_stable_non_empty_key(body: bytes, kind: str | None) -> None:
    """Whatever arrives is keyed, never an exception: identical bytes always get one key."""
    key = partition_key(body, kind)
    assert key == partition_key(bytes(body), kind)
    assert 0 < len(key) <= max(MAX_KEY_BYTES, 32)


def test_bodies_that_do_not_parse_are_keyed_by_a_hash_of_their_bytes() -> None:
    """A malformed body without a readable id is keyed by its exact bytes, its identity."""
    for body in (
        b'{"tracking-id":"x"',
        b"[1,2,3]",
        b'{"origin":"SMS_MT","code":"N2',
        b"<POSTBACK><TRACKINGID></TRACKINGID></POSTBACK>",
        b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>",
        b"",
    ):
        try:
            parse(body)
        except Unparseable:
            assert partition_key(body) == body_hash_key(body), body
        else:
            raise AssertionError(f"{body!r} parses: not a malformed example")


def test_tracking_ids_that_cannot_be_keys_are_keyed_by_that_field_alone() -> None:
    """An empty, over-long or non-text id keys by a hash of the id alone, so notifications
    that only a field identity calls the same still share a partition."""
    for tracking_id in ('""', '"   "', '"' + "x" * (MAX_KEY_BYTES + 1) + '"', '["x"]', "true"):
        first = f'{{"origin":"SMS_MT","code":"N201","tracking-id":{tracking_id}}}'.encode()
        second = f'{{"origin":"SMS_MT","code":"N202","tracking-id":{tracking_id}}}'.encode()
        assert partition_key(first) == partition_key(second), tracking_id
        assert partition_key(first) != body_hash_key(first)


def test_numeric_ids_and_padding_are_normalised_the_same_way_in_both_formats() -> None:
    """An id written as a JSON number or padded in XML keys like its plain text."""
    assert partition_key(b'{"origin":"SMS_MT","code":"N202","tracking-id": 12345}') == b"12345"
    padded = b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><TRACKINGID> 12345 </TRACKINGID>"
    assert partition_key(padded + b"</POSTBACK>") == b"12345"


def test_different_bodies_without_ids_spread_over_keys() -> None:
    """The fallback is a real hash: distinct bodies get distinct keys."""
    keys = {partition_key(f"garbage {n}".encode()) for n in range(1000)}
    assert len(keys) == 1000
