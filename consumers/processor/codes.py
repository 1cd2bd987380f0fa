"""The provider's notification codes, in one table: what each code means for the event stream.

Every reading of a code (its description, the normalised status, finality, error-ness) lives
here, so the enrichment, docs/events.md and the tests share one source. The provider never
states finality or error-ness; the values below are our reading of its code descriptions
(postback-formats.md §3), and `None` says "the documentation leaves this open".

An unknown code is not an error: it classifies as status "unknown" and still becomes an event,
because the provider adds codes without notice and losing them would be worse than a vague one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, NamedTuple

from consumers.events.model import Status

# Outcomes that mean "the message did not get where it was going"; used when a status comes
# from the provider's status text rather than from the code (v1 N102 and friends).
_ERROR_STATUSES: Final = frozenset({"expired", "failed", "rejected"})


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What one code means. `reads_status_text` marks codes whose outcome is in the status text.

    v1 `N102` meant "a delivery report arrived, success or not", and `E202`/`E502` cover
    several outcomes; for those the text ("Message Sent/Expired") refines `status`.
    """

    description: str
    status: Status
    is_final: bool | None
    is_error: bool | None
    reads_status_text: bool = False


class Classification(NamedTuple):
    """The code's meaning for one notification, after origin, dialect and status text.

    A NamedTuple rather than a frozen dataclass: one is built per record, and tuples are cheap.
    """

    description: str | None
    status: Status
    is_final: bool | None
    is_error: bool | None


# Keyed by code alone: the meaning every origin shares.
BY_CODE: Final[dict[str, CodeInfo]] = {
    # MMS MT delivery
    "N101": CodeInfo("MMS sending started", "sent", False, False),
    "N102": CodeInfo(
        "MMS delivered (delivery report received)", "delivered", True, False, reads_status_text=True
    ),
    "N103": CodeInfo("MMS expired before delivery", "expired", True, True),
    "E101": CodeInfo("MMS could not be sent", "failed", True, True),
    "E102": CodeInfo("MMS rejected or destination unrecognised", "rejected", True, True),
    # SMS MT delivery
    "N201": CodeInfo("SMS submitted to the carrier", "sent", False, False),
    "N202": CodeInfo("SMS delivered", "delivered", True, False),
    "E201": CodeInfo("SMS submission to the carrier failed", "failed", True, True),
    "E202": CodeInfo("SMS not delivered", "rejected", True, True, reads_status_text=True),
    # saveMMS / sendMMS transcoding
    "N003": CodeInfo("Saved MMS transcoded; template usable", "transcoded", True, False),
    "N013": CodeInfo("MMS transcoded and sending triggered", "transcoded", False, False),
    "E001": CodeInfo("Mobile video encoding failed", "transcoding_failed", True, True),
    "E002": CodeInfo(
        "Saved MMS audio transcoding failed; MMS corrupted", "transcoding_failed", True, True
    ),
    "E003": CodeInfo("Saved MMS video transcoding failed", "transcoding_failed", True, True),
    "E004": CodeInfo("Saved MMS image transcoding failed", "transcoding_failed", True, True),
    "E011": CodeInfo("MMS content validation failed", "content_invalid", True, True),
    "E012": CodeInfo("MMS audio transcoding failed; not sent", "transcoding_failed", True, True),
    "E013": CodeInfo("MMS video transcoding failed; not sent", "transcoding_failed", True, True),
    "E999": CodeInfo("Queue processing error after sending", "queue_error", None, True),
    "E100": CodeInfo(
        "Invalid request (an API error code seen in a postback)", "failed", None, True
    ),
    # Inbound messages: one postback each, so nothing follows them.
    "N211": CodeInfo("Inbound SMS received", "received", True, False),
    "N401": CodeInfo("Inbound MMS received", "received", True, False),
    # Device discovery
    "N501": CodeInfo("Device discovery message sent", "sent", False, False),
    "N502": CodeInfo("Device discovery message delivered", "delivered", True, False),
    "E501": CodeInfo("Device discovery message failed", "failed", True, True),
    "E502": CodeInfo(
        "Device discovery message not delivered", "failed", True, True, reads_status_text=True
    ),
    # v1 subscriptions and passes
    "N301": CodeInfo("Number subscribed", "subscribed", True, False),
    "N302": CodeInfo("Number unsubscribed", "unsubscribed", True, False),
    "N303": CodeInfo("E-mail address subscribed", "subscribed", True, False),
    "N304": CodeInfo("E-mail address unsubscribed", "unsubscribed", True, False),
    "N801": CodeInfo("Pass generated", "pass_generated", True, False),
}

# Keyed by (origin, code): where an origin gives a shared code a narrower meaning.
BY_ORIGIN_CODE: Final[dict[tuple[str, str], CodeInfo]] = {
    ("MMS_MT", "N202"): CodeInfo("MMS delivered as fallback SMS", "delivered", True, False),
    ("MMS_MT", "E202"): CodeInfo(
        "MMS fallback SMS not delivered", "rejected", True, True, reads_status_text=True
    ),
}

# XML (v1 and the Sinch XML dialect): N102 says only that a delivery report arrived; the
# outcome is in STATUS, and without a readable STATUS we do not know it.
LEGACY_BY_CODE: Final[dict[str, CodeInfo]] = {
    "N102": CodeInfo(
        "Delivery report received (outcome in the status text)",
        "unknown",
        True,
        None,
        reads_status_text=True,
    ),
}

# The last word of a status text ("Message Sent/Expired" -> "expired"), folded to lower case
# without spaces; both spellings of "unrecognised" occur in the provider's pages.
_TEXT_STATUSES: Final[dict[str, Status]] = {
    "sent": "sent",
    "delivered": "delivered",
    "expired": "expired",
    "rejected": "rejected",
    "failed": "failed",
    "notsupported": "failed",
    "undelivered": "failed",
    "unrecognised": "rejected",
    "unrecognized": "rejected",
}


def status_from_text(text: str | None) -> Status | None:
    """The outcome named by a status text, or None when the text names none we know.

    Accepts the v2 words ("Expired"), v2 details ("Message Expired") and v1 pairs
    ("Message Sent/Expired"): the outcome is always the last word after the last slash.
    """
    if not text:
        return None
    last = text.rpartition("/")[2].strip().lower()
    last = last.removeprefix("message").replace(" ", "")
    return _TEXT_STATUSES.get(last)


def lookup(origin: str, code: str, *, legacy: bool) -> CodeInfo | None:
    """The table entry for a code, most specific first: (origin, code), XML dialect, code."""
    key = code.strip().upper()
    specific = BY_ORIGIN_CODE.get((origin.strip().upper(), key))
    if specific is not None:
        return specific
    if legacy:
        old = LEGACY_BY_CODE.get(key)
        if old is not None:
            return old
    return BY_CODE.get(key)


@functools.lru_cache(maxsize=4096)  # a handful of origin/code/text combinations recur
def classify(origin: str, code: str, status_text: str | None, *, legacy: bool) -> Classification:
    """The meaning of one notification's code; never raises, unknown codes included.

    `legacy` is true for XML input, where N102 carries its outcome in the status text.
    For an unknown code the provider's own convention still says something: E-codes are
    errors. Whether an unknown N-code is an error, or any unknown code final, stays open.
    """
    info = lookup(origin, code, legacy=legacy)
    if info is None:
        is_error = True if code.strip().upper().startswith("E") else None
        return Classification(None, "unknown", None, is_error)
    status = info.status
    is_error = info.is_error
    if info.reads_status_text:
        from_text = status_from_text(status_text)
        if from_text is not None:
            status = from_text
            is_error = from_text in _ERROR_STATUSES
    return Classification(info.description, status, info.is_final, is_error)
