"""The code table: every documented code has a meaning, and unknown codes still classify."""

from __future__ import annotations

import pytest

from consumers.events.model import STATUSES
from consumers.processor.codes import (
    BY_CODE,
    BY_ORIGIN_CODE,
    LEGACY_BY_CODE,
    CodeInfo,
    classify,
    lookup,
    status_from_text,
)

# Every postback code in postback-formats.md §3 (plus N801 from the v1 pass docs), by kind.
DOCUMENTED_CODES = (
    *("N101", "N102", "N103", "E101", "E102", "E999", "E100"),  # MMS MT delivery
    *("N201", "N202", "E201", "E202"),  # SMS MT delivery (N202/E202 also MMS fallback)
    *("N003", "N013", "E001", "E002", "E003", "E004", "E011", "E012", "E013"),  # transcoding
    *("N211", "N401"),  # inbound
    *("N501", "N502", "E501", "E502"),  # device discovery
    *("N301", "N302", "N303", "N304", "N801"),  # v1 subscriptions and passes
)

# Statuses that mean the message (or content) did not make it; everything else is success.
FAILURE_STATUSES = {
    "expired",
    "failed",
    "rejected",
    "transcoding_failed",
    "content_invalid",
    "queue_error",
}

ALL_ENTRIES = [
    *BY_CODE.items(),
    *(("/".join(key), info) for key, info in BY_ORIGIN_CODE.items()),
    *(("legacy " + key, info) for key, info in LEGACY_BY_CODE.items()),
]


def test_every_documented_code_is_in_the_table() -> None:
    """A documented code never falls through to "unknown"."""
    assert set(DOCUMENTED_CODES) <= set(BY_CODE)


@pytest.mark.parametrize(("key", "info"), ALL_ENTRIES, ids=[key for key, _ in ALL_ENTRIES])
def test_table_entries_are_consistent(key: str, info: CodeInfo) -> None:
    """Error-ness agrees with the status, and every status is one the schema allows."""

    assert info.status in STATUSES
    assert info.description
    if info.status == "unknown":
        assert info.is_error is None
    else:
        assert info.is_error is (info.status in FAILURE_STATUSES)


@pytest.mark.parametrize(
    ("origin", "code", "text", "status", "is_final", "is_error"),
    [
        ("SMS_MT", "N201", "Sent", "sent", False, False),
        ("SMS_MT", "N202", "Delivered", "delivered", True, False),
        ("SMS_MT", "E201", "Failed", "failed", True, True),
        ("SMS_MT", "E202", "Rejected", "rejected", True, True),
        ("MMS_MT", "N101", "Sent", "sent", False, False),
        ("MMS_MT", "N102", "Delivered", "delivered", True, False),
        ("MMS_MT", "N103", "Expired", "expired", True, True),
        ("MMS_MT", "E101", "Failed", "failed", True, True),
        ("MMS_MT", "E102", "Rejected", "rejected", True, True),
        ("MMS_MT", "E102", "Unrecognised", "rejected", True, True),
        ("MMS_MT", "N202", "Delivered", "delivered", True, False),
        ("MMS_MT", "N003", None, "transcoded", True, False),
        ("MMS_MT", "N013", None, "transcoded", False, False),
        ("MMS_MT", "E002", None, "transcoding_failed", True, True),
        ("MMS_MT", "E011", None, "content_invalid", True, True),
        ("MMS_MT", "E999", None, "queue_error", None, True),
        ("SMS_MO", "N211", None, "received", True, False),
        ("MMS_MO", "N401", None, "received", True, False),
        ("MMS_MT", "N502", "Message Sent/Delivered", "delivered", True, False),
        ("SUB", "N301", None, "subscribed", True, False),
        ("SUB", "N302", None, "unsubscribed", True, False),
        ("GENERATE_PASS", "N801", None, "pass_generated", True, False),
    ],
)
def test_v2_codes_classify_as_documented(
    origin: str,
    code: str,
    text: str | None,
    status: str,
    is_final: bool | None,
    is_error: bool | None,
) -> None:
    """Each code's normalised status, finality and error-ness follow postback-formats.md §3."""
    meaning = classify(origin, code, text, legacy=False)
    assert (meaning.status, meaning.is_final, meaning.is_error) == (status, is_final, is_error)


@pytest.mark.parametrize(
    ("text", "status", "is_error"),
    [
        ("Message Sent/Delivered", "delivered", False),
        ("Message Sent/Expired", "expired", True),
        ("Message Sent/Rejected", "rejected", True),
        ("Message Sent/Failed", "failed", True),
    ],
)
def test_v1_n102_reads_its_status_text(text: str, status: str, is_error: bool) -> None:
    """v1 N102 means only "a delivery report arrived"; its STATUS says which outcome."""
    meaning = classify("MMS_MT", "N102", text, legacy=True)
    assert (meaning.status, meaning.is_error, meaning.is_final) == (status, is_error, True)


def test_v1_n102_without_a_readable_status_is_unknown() -> None:
    """Without a readable STATUS a v1 N102 is final but its outcome is not guessed."""
    for text in (None, "", "Handset busy"):
        meaning = classify("MMS_MT", "N102", text, legacy=True)
        assert (meaning.status, meaning.is_final, meaning.is_error) == ("unknown", True, None)


def test_v2_n102_is_delivered_even_without_status_text() -> None:
    """In v2, N102 itself means delivered."""
    assert classify("MMS_MT", "N102", None, legacy=False).status == "delivered"


def test_n202_is_delivered_under_both_origins_with_its_own_description() -> None:
    """N202 under MMS_MT is the fallback SMS delivery; under SMS_MT a plain SMS delivery."""
    sms = classify("SMS_MT", "N202", None, legacy=False)
    fallback = classify("MMS_MT", "N202", None, legacy=True)
    assert sms.status == fallback.status == "delivered"
    assert fallback.description is not None
    assert "fallback" in fallback.description.lower()
    assert sms.description != fallback.description


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Message Sent/Expired", "expired"),
        ("Message Sent/NotSupported", "failed"),
        ("Message Sent/Failed", "failed"),
        (None, "rejected"),
    ],
)
def test_e202_outcome_follows_its_status_text(text: str | None, status: str) -> None:
    """v1 E202 covers expired, failed and unsupported; the text decides, else "rejected"."""
    assert classify("SMS_MT", "E202", text, legacy=True).status == status


def test_codes_are_matched_regardless_of_case_and_spacing() -> None:
    """A code written " n202 " is still N202."""
    assert lookup(" sms_mt ", " n202 ", legacy=False) is BY_CODE["N202"]


@pytest.mark.parametrize(
    ("code", "is_error"), [("E777", True), ("N777", None), ("X1", None), ("e123", True)]
)
def test_unknown_codes_still_classify(code: str, is_error: bool | None) -> None:
    """An unknown code is an event with status "unknown"; E-codes are still errors."""
    meaning = classify("MMS_MT", code, "Delivered", legacy=False)
    assert meaning.status == "unknown"
    assert meaning.description is None
    assert meaning.is_final is None
    assert meaning.is_error is is_error


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Delivered", "delivered"),
        ("Message Delivered", "delivered"),
        ("Message Sent/Delivered", "delivered"),
        ("message sent/expired", "expired"),
        ("Message Sent/Not Supported", "failed"),
        ("Unrecognized", "rejected"),
        ("Message Sent", "sent"),
        ("Read", None),
        ("", None),
        (None, None),
    ],
)
def test_status_text_vocabulary(text: str | None, status: str | None) -> None:
    """v2 words, v2 details and v1 pairs all name their outcome by the last word."""
    assert status_from_text(text) == status
