"""Raw postback bytes -> a `Notification` whose fields carry the provider's v2 JSON names.

Both wire formats end in one shape so enrichment and identity never ask which format they
hold: v2 JSON passes through (one documented alias renamed); v1 XML nodes are mapped to their
v2 names (postback-formats.md §4), and nodes without a v2 name are kept under a kebab-case
form of their own. Nothing is dropped, so enrichment can put every unknown field in `extra`.

Everything that cannot become a notification raises `Unparseable` with a `DeadLetterReason`
(consumers/dlq.py: the table of every reason, what it means and what to do) and a detail for
humans, which may change.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Final, NamedTuple, TypeAlias
from urllib.parse import unquote_to_bytes

import orjson

from consumers.dlq import DeadLetterReason
from consumers.events.model import InputFormat

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"

# The reasons a body is refused for; the pipeline adds ENRICH_FAILED.
REASONS: Final = tuple(
    reason for reason in DeadLetterReason if reason is not DeadLetterReason.ENRICH_FAILED
)

_DETAIL_LIMIT: Final = 200
# First bytes of a JSON object/array or of XML: such a body is read as itself, whatever its label.
_DOCUMENT_STARTS: Final = (b"<", b"{", b"[")
# Deep enough for any documented body (content is depth 3); shallow enough that orjson can
# always serialise what we parsed (it refuses nesting beyond 254 when dumping).
MAX_DEPTH: Final = 32


class Unparseable(Exception):
    """This body can never become an event; dead-letter it, do not retry it.

    `reason` is one of `REASONS`; `detail` says what was wrong, bounded in length.
    """

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(reason, detail[:_DETAIL_LIMIT])
        self.reason = reason
        self.detail: str = detail[:_DETAIL_LIMIT]

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Notification(NamedTuple):
    """One parsed postback. Treat the mappings as read-only; they may share storage.

    `fields` uses v2 names (`tracking-id`, `operator-id`, ...), values as given: strings in
    every documented body, lists for `content`/`copy-to`, and whatever JSON carried otherwise.
    `document` is what the dedupe identity hashes: the JSON object as received, or for XML
    (which has no canonical JSON of its own) the same mapping as `fields`.
    `origin` and `code` are guaranteed non-empty strings: parsing refuses bodies without them.
    """

    input_format: InputFormat
    origin: str
    code: str
    fields: Mapping[str, JsonValue]
    document: Mapping[str, JsonValue]


def parse(body: bytes, content_type: str | None = None) -> Notification:
    """Parse one postback body; raises `Unparseable` and nothing else.

    The body's first byte decides the format, not `content_type`: the provider's Content-Type
    is undocumented and a mislabelled body is still readable. `content_type` only matters for
    a form-encoded body, the way v1 *requests* carried XML (an `xml` form field); a body
    starting with `xml=` is read that way too.
    """
    if body.startswith(b"{"):  # nearly every body: JSON, nothing before it
        return _parse_json(body)
    start = body.lstrip()
    if start.startswith(b"\xef\xbb\xbf"):
        start = start[3:].lstrip()
    if not start:
        raise Unparseable(DeadLetterReason.EMPTY_BODY, "no content after whitespace")
    if start[:1] not in _DOCUMENT_STARTS and (
        start.startswith(b"xml=")
        or (content_type is not None and "x-www-form-urlencoded" in content_type.lower())
    ):
        start = _form_xml(start).lstrip()
        if not start:
            raise Unparseable(DeadLetterReason.EMPTY_BODY, "form body without an xml field")
    if start.startswith(b"<"):
        return _parse_xml(start)
    return _parse_json(start)


# ---------------------------------------------------------------------------------------- JSON

# Documented alternative spellings of v2 keys (Skycore's MMS MT table lists both).
_JSON_ALIASES: Final[dict[str, str]] = {"trackingid": "tracking-id"}


def _parse_json(body: bytes) -> Notification:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unparseable(_encoding_or(body, DeadLetterReason.INVALID_JSON), str(exc)) from None
    if not isinstance(document, dict):
        raise Unparseable(
            DeadLetterReason.NOT_AN_OBJECT, f"top-level JSON value is {type(document).__name__}"
        )
    # A body with no more brackets than the limit cannot nest deeper: skip the walk.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and not _shallow_enough(document, MAX_DEPTH):
        raise Unparseable(DeadLetterReason.INVALID_JSON, f"nested deeper than {MAX_DEPTH} levels")
    fields: dict[str, JsonValue] = document
    for alias, name in _JSON_ALIASES.items():
        if alias in fields and name not in fields:
            fields = {(name if key == alias else key): value for key, value in fields.items()}
    origin, code = _discriminators(fields)
    return Notification("json_v2", origin, code, fields, document)


def _shallow_enough(container: dict[str, object] | list[object], budget: int) -> bool:
    """True when containers nest at most `budget` deep; stops at the budget, never deeper."""
    if budget <= 0:
        return False
    children = container.values() if isinstance(container, dict) else container
    for child in children:
        if isinstance(child, (dict, list)) and not _shallow_enough(child, budget - 1):
            return False
    return True


# ----------------------------------------------------------------------------------------- XML

# v1 node -> v2 key (postback-formats.md §4). Nodes with no v2 equivalent get readable kebab
# names so `extra` stays legible. Looked up upper-cased so the Sinch dialect maps alike.
V1_NAMES: Final[dict[str, str]] = {
    "ORIGIN": "origin",
    "CODE": "code",
    "STATUSCODE": "code",  # GENERATE_PASS uses STATUSCODE instead of CODE
    "STATUS": "status",
    "STATUSDETAILS": "status-details",
    "SENTAS": "sent-as",
    "MMSID": "mms-id",
    "FROM": "from",
    "TO": "to",
    "FROM_MASK": "from-mask",
    "TRACKINGID": "tracking-id",
    "TRANSACTIONID": "tracking-id",  # SMS MO
    "SPID": "operator-id",
    "TIMESTAMP": "timestamp",
    "RECEIVED": "timestamp",  # SMS MO
    "TEXT": "message-text",
    "SUBJECT": "message-subject",
    "KEYWORD": "keyword",
    "CONTENT": "content",
    # no v2 equivalent: kept in `extra` under these names
    "AGGREGATORID": "aggregator-id",
    "AUDIONAME": "audio-name",
    "VIDEONAME": "video-name",
    "CAMPAIGNID": "campaign-id",
    "SUBID": "sub-id",
    "REFERENCEDBY": "referenced-by",
    "REFERENCEVALUE": "reference-value",
    "CUSTOMPASSID": "custom-pass-id",
    "PASSDATAID": "pass-data-id",
    "SERIALNUMBER": "serial-number",
}
_ROOTS: Final[dict[str, InputFormat]] = {"POSTBACK": "xml_v1", "postback": "xml_sinch"}
# v2 keys whose value is a list of one-key objects, and that key.
_LIST_FIELDS: Final[dict[str, str]] = {"content": "file", "copy-to": "number"}
# A wrapper some v1 MMS MO bodies put between POSTBACK and the fields.
_WRAPPER: Final = "NOTIFICATION"
# Encodings whose bytes spell "<!DOCTYPE" in ASCII, so the refusal below cannot be dodged.
_SAFE_ENCODINGS: Final = frozenset(
    {b"utf-8", b"utf8", b"us-ascii", b"ascii", b"iso-8859-1", b"iso8859-1", b"latin-1", b"latin1"}
)
_DECLARED_ENCODING: Final = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")


def _parse_xml(body: bytes) -> Notification:
    _refuse_unsafe_xml(body)
    try:
        root = ET.fromstring(body)  # noqa: S314  unsafe constructs were refused above
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise Unparseable(_encoding_or(body, DeadLetterReason.INVALID_XML), str(exc)) from None
    root_name = _local(root.tag)
    input_format = _ROOTS.get(root_name)
    if input_format is None:
        raise Unparseable(DeadLetterReason.UNKNOWN_ROOT, f"root element <{root_name[:40]}>")
    fields: dict[str, JsonValue] = {}
    owners: dict[str, str] = {}  # v2 name -> the node (upper-cased) that took it
    for element in _field_elements(root):
        name, node = _field_name(element.tag)
        if name in owners and owners[name] != node:
            # Two different nodes map to one key (TRACKINGID and TRANSACTIONID): the first
            # keeps the v2 name, the other keeps its own so neither value is lost.
            name = node.lower().replace("_", "-")
        part_name = _LIST_FIELDS.get(name)
        if part_name is not None:
            value = _parts(element, part_name)
        elif len(element):
            value = _value(element, MAX_DEPTH)
        else:  # a leaf, as nearly every field is: `_value` inlined
            value = element.text or ""
        if name not in fields:
            owners[name] = node
            fields[name] = value
        else:
            fields[name] = _repeated(fields[name], value, merge=part_name is not None)
    origin, code = _discriminators(fields)
    return Notification(input_format, origin, code, fields, fields)


def _refuse_unsafe_xml(body: bytes) -> None:
    """Refuse what could make expat expand entities or read an encoding we cannot screen."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise Unparseable(
            DeadLetterReason.XML_DOCTYPE_FORBIDDEN, "DOCTYPE or ENTITY declaration in body"
        )
    if b"\x00" in body:
        raise Unparseable(
            DeadLetterReason.INVALID_XML, "NUL byte: only UTF-8 or single-byte XML is accepted"
        )
    if body.startswith(b"<?xml"):
        declared = _DECLARED_ENCODING.match(body, 0, 256)
        if declared is not None and declared.group(1).lower() not in _SAFE_ENCODINGS:
            raise Unparseable(DeadLetterReason.INVALID_XML, "unsupported declared encoding")


def _field_elements(root: ET.Element) -> list[ET.Element]:
    """The root's children, with any NOTIFICATION wrapper's children in its place."""
    elements: list[ET.Element] = []
    for child in root:
        if len(child) and _field_name(child.tag)[1] == _WRAPPER:
            elements.extend(child)
        else:
            elements.append(child)
    return elements


@functools.lru_cache(maxsize=1024)
def _field_name(tag: str) -> tuple[str, str]:
    """(v2 name, upper-cased local name) of an element tag; cached, as tags repeat endlessly."""
    local = _local(tag)
    node = local.upper()
    return V1_NAMES.get(node) or _kebab(local), node


def _repeated(previous: JsonValue, value: JsonValue, *, merge: bool) -> JsonValue:
    """A node that appears again: its values become a list (list fields are concatenated)."""
    head = previous if isinstance(previous, list) else [previous]
    if merge and isinstance(value, list):
        return [*head, *value]
    return [*head, value]


def _parts(element: ET.Element, part_name: str) -> JsonValue:
    """CONTENT/FILE* -> the v2 shape, a list of {"file": url} (copy-to alike, with "number").

    Children with another tag keep their own kebab name, so nothing is silently renamed.
    """
    if not len(element):
        text = element.text or ""
        return [] if not text.strip() else text
    parts: list[JsonValue] = []
    for part in element:
        tag = _local(part.tag)
        name = part_name if tag.upper() == part_name.upper() else _kebab(tag)
        parts.append({name: _value(part, MAX_DEPTH - 1)})
    return parts


def _value(element: ET.Element, budget: int) -> JsonValue:
    """A leaf's text exactly as sent; a nested element as a mapping of its children."""
    if not len(element):
        return element.text or ""
    if budget <= 1:
        return "".join(element.itertext())
    nested: dict[str, JsonValue] = {}
    for child in element:
        name = _kebab(_local(child.tag))
        value = _value(child, budget - 1)
        nested[name] = value if name not in nested else _repeated(nested[name], value, merge=False)
    return nested


def _local(tag: str) -> str:
    """Drop an `{namespace}` prefix: schema attributes on the root must not change names."""
    return tag.rpartition("}")[2]


def _kebab(tag: str) -> str:
    name = tag.lower().replace("_", "-")
    return "tracking-id" if name == "trackingid" else name


def _form_xml(body: bytes) -> bytes:
    """The `xml` field of a form-encoded body, percent-decoded; empty when there is none."""
    for pair in body.split(b"&"):
        if pair.startswith(b"xml="):
            return unquote_to_bytes(pair[4:].replace(b"+", b" "))
    return b""


# -------------------------------------------------------------------------------------- shared


def _discriminators(fields: Mapping[str, JsonValue]) -> tuple[str, str]:
    """`origin` and `code`, which every postback carries and every later step relies on."""
    origin = fields.get("origin")
    if not isinstance(origin, str) or not origin.strip():
        raise Unparseable(DeadLetterReason.MISSING_ORIGIN, _shape("origin", origin))
    code = fields.get("code")
    if not isinstance(code, str) or not code.strip():
        raise Unparseable(DeadLetterReason.MISSING_CODE, _shape("code", code))
    return origin, code


def _shape(name: str, value: object) -> str:
    if value is None:
        return f"no {name} field"
    return f"{name} is not a single non-empty string ({type(value).__name__})"


def _encoding_or(body: bytes, reason: DeadLetterReason) -> DeadLetterReason:
    """Tell "not UTF-8" apart from "bad syntax": only called on the failure path."""
    declared = _DECLARED_ENCODING.match(body, 0, 256) if body.startswith(b"<?xml") else None
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return reason  # a declared single-byte encoding: every byte is valid there
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return DeadLetterReason.INVALID_UTF8
    return reason
