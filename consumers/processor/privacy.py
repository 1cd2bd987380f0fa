"""What the published event may say about people: numbers as keyed pseudonyms, no message content.

Applied to the enriched event, after enrichment read region, calling code and number type from
the real numbers, so those facts survive while the numbers do not. The raw topic and the DLQ
keep the original bytes: they are the archive (docs/events.md, "Privacy").

A pseudonym is `pn1:` and the hex of the first 16 bytes of HMAC-SHA-256(key, number), where the
number is written as digits with country code (`+1 415-555-0123` -> `14155550123`), or as given
when it is not a phone number. The same key gives the same pseudonym in every instance and after
every restart, so joins and distinct counts on `from`/`to` still work; without the key nobody
can reverse one by hashing every possible number, which a plain hash would allow. `pn1` names
this recipe; a different recipe would be `pn2`.

Short codes and alphanumeric sender ids are the sending business's identity, not a subscriber's,
and stay as given: a value of at most 11 characters (the GSM limit for an alphanumeric sender)
with at most 6 digits (a short code's most; no phone number has fewer than 7). Everything else
in `from`, `to` and `copy_to` becomes a pseudonym.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Final

from consumers.events.model import Event
from consumers.processor.enrich import SHORT_CODE_MAX_DIGITS, compact_number
from consumers.settings import ProcessorSettings

PSEUDONYM_PREFIX: Final = "pn1:"
PSEUDONYM_BYTES: Final = 16
SENDER_ID_MAX_CHARS: Final = 11
# `extra` keys naming a subscriber (v1 MOBILE of a subscription, a pass's REFERENCEVALUE, an
# e-mail subscription's address), plus known number fields kept there when wrongly shaped.
IDENTITY_EXTRA: Final = ("mobile", "reference-value", "email")
NUMBER_EXTRA: Final = ("from", "to", "copy-to")
# Content fields kept in `extra` when wrongly shaped.
CONTENT_EXTRA: Final = ("message-text", "message-subject", "content")
_CACHED_NUMBER_MAX_CHARS: Final = 32


def is_sender_id(value: str) -> bool:
    """True for a short code or an alphanumeric sender id: published as given."""
    return len(value) <= SENDER_ID_MAX_CHARS and (
        sum(character.isdigit() for character in value) <= SHORT_CODE_MAX_DIGITS
    )


class Privacy:
    """Applies the privacy settings to events; any number of them share one pseudonym cache."""

    __slots__ = ("_cached_published", "_include_content", "_key")

    def __init__(self, key: bytes | None, *, include_content: bool) -> None:
        """`key` None publishes numbers as given; `include_content` keeps message content."""
        self._key = key
        self._include_content = include_content
        # Without a key every number is published as given: the "cache" is the identity.
        self._cached_published = _published_cache(key) if key is not None else _as_given

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> Privacy:
        secret = settings.pseudonym_key if settings.pseudonymise_numbers else None
        key = secret.reveal().encode() if secret is not None else None
        return cls(key, include_content=settings.include_content)

    def apply(self, event: Event) -> None:
        """Make `event` publishable, in place; it says which protections it carries."""
        extra = event["extra"]
        key = self._key
        if key is not None:
            # The cached path inline: this runs for every event.
            sender, recipient = event["from"], event["to"]
            cached = self._cached_published
            if sender is not None:
                event["from"] = (
                    cached(sender)
                    if len(sender) <= _CACHED_NUMBER_MAX_CHARS
                    else _published(key, sender)
                )
            if recipient is not None:
                event["to"] = (
                    cached(recipient)
                    if len(recipient) <= _CACHED_NUMBER_MAX_CHARS
                    else _published(key, recipient)
                )
            if event["copy_to"]:
                event["copy_to"] = [self.published(number) for number in event["copy_to"]]
            if extra:
                self._extra_numbers(extra)
        event["numbers_pseudonymised"] = key is not None
        if not self._include_content:
            event["message_text"] = None
            event["message_subject"] = None
            event["content_files"] = []
            if extra:
                for name in CONTENT_EXTRA:
                    extra.pop(name, None)
        event["content_withheld"] = not self._include_content

    def published(self, number: str) -> str:
        """A sender or recipient as published: sender ids (and, without a key, every number)
        as given, else the pseudonym."""
        if self._key is not None and len(number) > _CACHED_NUMBER_MAX_CHARS:
            return _published(self._key, number)  # never cache what a hostile body makes large
        return self._cached_published(number)

    def pseudonym(self, value: str) -> str:
        """The keyed pseudonym of a number (or any identifier); needs a key."""
        if self._key is None:
            raise ValueError("pseudonyms need a key")
        if len(value) > _CACHED_NUMBER_MAX_CHARS:
            return _pseudonym(self._key, value)
        return _cached_pseudonym(self._key, value)

    def _extra_numbers(self, extra: dict[str, object]) -> None:
        for name in NUMBER_EXTRA:
            if name in extra:
                extra[name] = _mapped(extra[name], self.published)
        for name in IDENTITY_EXTRA:
            if name in extra:
                extra[name] = _mapped(extra[name], self.pseudonym)


def _published(key: bytes, number: str) -> str:
    return number if is_sender_id(number) else _pseudonym(key, number)


def _pseudonym(key: bytes, value: str) -> str:
    compact = compact_number(value)
    canonical = compact if compact.isascii() and compact.isdigit() else value
    digest = hmac.digest(key, canonical.encode(), "sha256")
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_BYTES].hex()


# Numbers repeat (a message's sent and final postbacks, a subscriber's messages, the same few
# short codes), and an HMAC costs more than the rest of an event's privacy. One cache per key
# for the process: the pipelines of every partition share it, and it outlives a partition
# moving away and back. Keyed by the number alone (the key is the cache's), an entry holds
# ~230 bytes: 3.5 MiB full, room for B3's 10,000 recurring recipients (an LRU cache smaller than
# a recurring set hits nothing: at 4,096 entries B3's pipeline hashed 1.5 more numbers a record).
_CACHED_PSEUDONYMS: Final = 16384


@functools.cache
def _published_cache(key: bytes) -> Callable[[str], str]:
    return functools.lru_cache(maxsize=_CACHED_PSEUDONYMS)(functools.partial(_published, key))


def _as_given(number: str) -> str:
    return number


_cached_pseudonym: Final = functools.lru_cache(maxsize=_CACHED_PSEUDONYMS)(_pseudonym)


def _mapped(value: object, publish: Callable[[str], str]) -> object:
    """`value` with every string and number inside it published; other scalars as they are."""
    if isinstance(value, str):
        return publish(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return publish(str(value))
    if isinstance(value, list):
        return [_mapped(item, publish) for item in value]
    if isinstance(value, dict):
        return {key: _mapped(item, publish) for key, item in value.items()}
    return value
