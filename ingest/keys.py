"""The Kafka record key of a postback: the notification's tracking id, or its identity.

Contract: every two postbacks that the processor's dedupe identity
(`consumers/processor/identity.py`) calls the same notification get the same key. The key
picks the raw partition, and each partition has its own dedupe window, so a retry keyed
differently from its original would be emitted a second time. It also keeps a message's
notifications (which share a tracking id) ordered in one partition.

- A tracking id wherever the parser finds one (v2 JSON `tracking-id`, else `trackingid`; v1
  and Sinch XML; behind a UTF-8 BOM; in an `xml=` form body): the id, trimmed.
- A notification without one: its event id under the default identity (the hex digest of
  its canonical form), so retries that differ in whitespace, key order or wire format agree.
- A tracking-id field that cannot be a key (empty, over `MAX_KEY_BYTES`, not text): a hash of
  that field's value, so the key still depends on the tracking id alone.
- A body that does not parse: the id the cheap path below may still see in it, else a hash of
  its bytes. Either is a function of its bytes, and so is its identity (its exact bytes).

With `DEDUPE_IDENTITY_FIELDS` the identity compares only the listed fields; it must list
`tracking-id` (the processor refuses to start otherwise), and the key of a notification with
a tracking-id field depends on that field alone, so the contract still holds.

Cost: a JSON object with a usable id takes one `orjson.loads` and a lookup, as before; plain
XML (the id in ASCII, in a text-only element that is a child of the root or of a NOTIFICATION
wrapper and the body's only mention of an id name) takes a few byte counts and one short
regular expression, and gives exactly what the parser would read. Every other body (BOM, forms,
other XML, notifications without an id, malformed bodies) goes through the processor's own
parser, tens of microseconds. Whatever the bytes, no exception.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import orjson

from common.raw_record import KEY_FIELD
from consumers.processor.identity import digest, event_id
from consumers.processor.parse import JsonValue, Unparseable, parse

# Kafka keys are bytes of any length, but a runaway "id" is not an id.
MAX_KEY_BYTES: Final = 256
# The parser's one JSON alias of the key field, read only when the v2 name is absent.
_ID_ALIAS: Final = "trackingid"
_VALUE_HASH: Final = b"pbp.key.1"  # BLAKE2b personalisation of hashes of unusable id values

# Every local name the parser reads as the tracking id, lower-cased (it ignores case).
_ID_NAMES: Final = (b"trackingid", b"transactionid", b"tracking-id", b"tracking_id")
# The id element holding text alone, without entity references: its text is the parser's.
_ID_ELEMENT: Final = re.compile(rb"<([\w.-]+)\s*>([^<&]*)</\1\s*>")
# Before an id element inside a NOTIFICATION wrapper, or after a self-closing tag, this must
# match for the element to be a field of the parser's: an XML declaration, the root's start
# tag, then text-only elements without attributes, optionally inside one NOTIFICATION wrapper.
_PLAIN_XML_HEAD: Final = re.compile(
    rb"\s*(?:<\?xml\s[^<>]*\?>\s*)?<[\w.:-]+(?:\s[^<>]*)?>"
    rb"(?:\s*<([\w.:-]+)\s*(?:>[^<]*</\1\s*>|/>))*"
    rb"(?:\s*<(?i:notification)\s*>(?:\s*<([\w.:-]+)\s*(?:>[^<]*</\2\s*>|/>))*)?\s*"
)


def partition_key(body: bytes, content_type: str | None = None) -> bytes:
    """The key of the raw record for `body`, sent with `content_type` (see the module doc).

    `content_type` matters only as the parser uses it: to read a form-encoded body.
    """
    start = body.lstrip()[:1]
    if start == b"{":
        key = _json_id(body)
    elif start == b"<":
        key = _xml_id(body)
    else:
        key = None
    return key if key is not None else _parsed_key(body, content_type)


def body_hash_key(body: bytes) -> bytes:
    """Deterministic, so a byte-identical retry of a body that does not parse shares a key."""
    return hashlib.blake2b(body, digest_size=16).hexdigest().encode()


def _json_id(body: bytes) -> bytes | None:
    """The usable tracking id of a JSON object, or None to let the parser decide."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    return _id_key(document[KEY_FIELD] if KEY_FIELD in document else document.get(_ID_ALIAS))


def _xml_id(body: bytes) -> bytes | None:
    """The tracking id of plain XML, exactly as the parser would read it; else None."""
    lowered = body.lower()
    # Exactly two mentions of an id name (every one starts "tracking" or is "transactionid"),
    # and a text-only element there: its start and end tag, so no other element (prefixed,
    # nested, in a comment...) that the parser might read instead. Any other "tracking" in
    # the body, even in text, leaves the decision to the parser.
    tracking = lowered.count(b"tracking")
    if tracking + lowered.count(b"transactionid") != 2:
        return None
    at = lowered.find(b"tracking" if tracking else b"transactionid") - 1
    element = _ID_ELEMENT.match(body, at) if at >= 0 else None
    if element is None or element.group(1).lower() not in _ID_NAMES:
        return None
    if not _is_field(body[:at]):
        return None
    text = element.group(2)
    # Beyond ASCII the declared encoding decides the text; the parser turns CR into LF.
    if not text.isascii() or b"\r" in text:
        return None
    return _id_key(text.decode())


def _is_field(head: bytes) -> bool:
    """Whether an element after `head` is one the parser reads as a field: a child of the
    root, or of a NOTIFICATION wrapper that is one.

    Without comments, CDATA or processing instructions in `head`, every `<` there starts a
    tag (text and attribute values cannot hold one), so counting tags gives the depth; the
    count cannot tell a self-closing tag (`/>` may also be text) nor name the parent, so those
    cases take the stricter pattern.
    """
    if b"<!" in head:
        return False
    instructions = head.count(b"<?")
    if instructions and (instructions > 1 or head[: head.find(b"<?xml")].strip()):
        return False
    if b"/>" not in head and head.count(b"<") - 2 * head.count(b"</") - instructions == 1:
        return True
    return _PLAIN_XML_HEAD.fullmatch(head) is not None


def _parsed_key(body: bytes, content_type: str | None) -> bytes:
    try:
        notification = parse(body, content_type)
    except Unparseable:
        return body_hash_key(body)
    fields = notification.fields
    if KEY_FIELD not in fields:
        return event_id(digest(notification)).encode()
    value = fields[KEY_FIELD]
    return _id_key(value) or _value_key(value)


def _id_key(value: JsonValue) -> bytes | None:
    """A tracking id as a key: text or an integer, trimmed, 1 to MAX_KEY_BYTES bytes."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        key = str(value).strip().encode(errors="surrogatepass")
        if 0 < len(key) <= MAX_KEY_BYTES:
            return key
    return None


def _value_key(value: JsonValue) -> bytes:
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=16, person=_VALUE_HASH).hexdigest().encode()
