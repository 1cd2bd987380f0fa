"""The Kafka record key of a postback: its tracking id when one is cheap to find, else a hash.

Keying by tracking id puts a notification, its provider retries, and every other notification
of the same message into one partition, which keeps them ordered for the consumers. This is
the only look inside the body the edge allows itself; it must never fail, whatever the bytes.
"""

from __future__ import annotations

import hashlib
import re

import orjson

# v2 JSON spells it `tracking-id`; some MMS MT postbacks use `trackingid`.
JSON_KEY_FIELDS = ("tracking-id", "trackingid")
# v1 XML: TRACKINGID, or TRANSACTIONID on SMS MO; Sinch's XML dialect: <tracking-id>.
XML_KEY_PATTERN = re.compile(
    rb"<(TRACKINGID|TRANSACTIONID|tracking-id|trackingid)>\s*([^<\s][^<]*?)\s*</\1>"
)
# Kafka keys are bytes of any length, but a runaway "id" is not an id.
MAX_KEY_BYTES = 256


def body_hash_key(body: bytes) -> bytes:
    """Deterministic, so a byte-identical retry of an id-less body still shares a partition."""
    return hashlib.blake2b(body, digest_size=16).hexdigest().encode()


def tracking_id(body: bytes) -> bytes | None:
    """The tracking id in a v2 JSON or v1 XML body, or None when there is none to be had."""
    start = body.lstrip()[:1]
    if start == b"{":
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(document, dict):
            for field in JSON_KEY_FIELDS:
                value = document.get(field)
                if isinstance(value, str | int) and not isinstance(value, bool):
                    key = str(value).strip().encode()
                    if 0 < len(key) <= MAX_KEY_BYTES:
                        return key
        return None
    if start == b"<":
        match = XML_KEY_PATTERN.search(body)
        if match is not None and len(match.group(2)) <= MAX_KEY_BYTES:
            return match.group(2)
    return None


def partition_key(body: bytes) -> bytes:
    return tracking_id(body) or body_hash_key(body)
