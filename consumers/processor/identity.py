"""The dedupe identity of a notification: a fixed 16-byte digest, and the event id made from it.

Two postbacks with the same identity are the same notification delivered twice (the provider
retries on anything but a timely 200). The default identity is the canonical form of the
notification, so a retry that differs only in key order or whitespace is still a duplicate.
Providers that re-render retries (a fresh timestamp, say) need a narrower identity: a list of
fields, e.g. ("origin", "tracking-id", "code", "status").

Each kind of digest is computed under its own BLAKE2b personalisation, so a canonical digest,
a field-list digest and a raw-bytes digest can never collide with one another by construction.
The event id is the digest in hex: the same notification always yields the same event id, which
makes downstream upserts idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Final

import orjson

from consumers.processor import parse
from consumers.processor.parse import Notification

DIGEST_SIZE: Final = 16

_CANONICAL: Final = b"pbp.canonical.1"
_FIELDS: Final = b"pbp.fields.1"
_RAW: Final = b"pbp.raw.1"
# Each kind's hash, set up once: copying a set-up BLAKE2b state costs less than setting up a
# new one with its personalisation, and gives the same digests.
_CANONICAL_HASH: Final = blake2b(digest_size=DIGEST_SIZE, person=_CANONICAL)
_FIELDS_HASH: Final = blake2b(digest_size=DIGEST_SIZE, person=_FIELDS)
_RAW_HASH: Final = blake2b(digest_size=DIGEST_SIZE, person=_RAW)


def _digest(kind: blake2b, data: bytes) -> bytes:
    hasher = kind.copy()
    hasher.update(data)
    return hasher.digest()


def canonical_bytes(notification: Notification) -> bytes:
    """The notification's canonical form: its document as JSON with sorted keys, no spaces.

    For JSON input that is the body parsed and re-serialised; for XML it is the parsed field
    mapping (v2 names), so the v1 and Sinch XML dialects of one notification agree.
    """
    return orjson.dumps(notification.document, option=orjson.OPT_SORT_KEYS)


def digest(notification: Notification) -> bytes:
    """The default (canonical) identity, 16 bytes."""
    return _digest(_CANONICAL_HASH, canonical_bytes(notification))


def digest_raw(body: bytes) -> bytes:
    """The identity of a body that did not parse: its exact bytes (dead-letter dedupe)."""
    return _digest(_RAW_HASH, body)


# What a digest depends on besides the configuration: this module and the parser's reading of
# a body (a parser that reads a body differently makes another canonical form). Any change to
# either file counts, comments included: a needless rebuild costs seconds, a missed one
# duplicates.
_CODE: Final = blake2b(
    Path(__file__).read_bytes() + Path(parse.__file__).read_bytes(), digest_size=8
).digest()


def event_id(identity_digest: bytes) -> str:
    """The event id for a digest: 32 lower-case hex characters, stable across processes."""
    return identity_digest.hex()


@dataclass(frozen=True, slots=True)
class Identity:
    """How this deployment identifies duplicates; configured once at start-up.

    `fields` None means the canonical identity. With a field list, the digest covers only
    those fields' values (v2 names, e.g. "tracking-id"). A notification that lacks *any*
    listed field falls back to the canonical identity: otherwise, say, every transcoding
    result without a tracking id would share one digest and all but the first would be
    dropped as duplicates. Falling back can only keep a duplicate, never lose an event.
    """

    fields: tuple[str, ...] | None = None

    @classmethod
    def from_fields(cls, fields: str | Iterable[str] | None) -> Identity:
        """Validate a configured field list; None or an empty list means canonical.

        A string is read as a comma-separated list ("origin,tracking-id,code,status"), the
        way it arrives from an environment variable, never as a sequence of characters.
        """
        if fields is None:
            return cls(None)
        if isinstance(fields, str):
            names = tuple(name.strip() for name in fields.split(",") if name.strip())
        else:
            names = tuple(fields)
        if not names:
            return cls(None)
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"identity field names must be non-empty strings: {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"identity field names repeat: {names!r}")
        return cls(names)

    @property
    def fingerprint(self) -> bytes:
        """A tag that differs whenever this identity may give another digest for some body:
        another field list, or another version of the identity's or the parser's code.

        Dedupe state keyed by one identity means nothing to another: the state topic records
        carry the fingerprint of the identity that made their keys, and a restore that finds
        another one rebuilds from the raw topic instead (consumers/changelog.py).
        """
        fields = orjson.dumps(self.fields)
        return blake2b(_CODE + fields, digest_size=8, person=b"pbp.keys.1").hexdigest().encode()

    def canonical_bytes(self, notification: Notification) -> bytes:
        """The bytes this identity hashes, exposed so tests and tools can see what counts."""
        return self._material(notification)[1]

    def digest(self, notification: Notification) -> bytes:
        """16 bytes; equal for two notifications exactly when this identity calls them one."""
        if self.fields is None:  # the default, inline: this runs for every record
            hasher = _CANONICAL_HASH.copy()
            hasher.update(orjson.dumps(notification.document, option=orjson.OPT_SORT_KEYS))
            return hasher.digest()
        return _digest(*self._material(notification))

    def _material(self, notification: Notification) -> tuple[blake2b, bytes]:
        """(the kind of digest, the bytes it hashes)."""
        if self.fields is not None:
            present = notification.fields
            if all(name in present for name in self.fields):
                values = [present[name] for name in self.fields]
                return _FIELDS_HASH, orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
        return _CANONICAL_HASH, canonical_bytes(notification)
