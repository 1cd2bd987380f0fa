"""Dead letters: the raw value untouched, with headers saying why and where it came from.

A dead letter keeps every header the edge wrote (received-at, source, request id ...) and adds
`dlq-*` headers, so that a replay after a parser fix has everything the first attempt had.

Why a record is dead-lettered is one of `DeadLetterReason`: one table, read by the parser and
the pipeline that decide it, the writer that puts it in the `dlq-reason` header and the
`reason` label of `postback_processor_dead_letters_total`, and docs/events.md (a test holds
the docs to the table), so that a header, a metric label and the docs can never disagree.
"""

from __future__ import annotations

import enum
import time
from typing import Final

from common.raw_record import Headers


class DeadLetterReason(enum.StrEnum):
    """Why a raw record became a dead letter: its label, what it means, what to do about it.

    A member is its label (a `str`), so it goes into headers and metric labels as it is. The
    set is closed and small, because labels become metric series; the dead letter's
    `dlq-detail` says what exactly was wrong and may change between releases.
    """

    #            label, what it means, what to do
    EMPTY_BODY = (
        "empty_body",
        "nothing but whitespace (or a form body without an `xml` field)",
        "a sender fault or a probe: see the record's `source` and `client-addr` headers",
    )
    INVALID_UTF8 = (
        "invalid_utf8",
        "not UTF-8 (and not XML declaring another supported encoding)",
        "a sender that changed its encoding: fix the parser, then replay the range",
    )
    INVALID_JSON = (
        "invalid_json",
        "not valid JSON, or nested deeper than 32 levels",
        "cut short in transit, or a new shape: compare with the provider's documentation",
    )
    NOT_AN_OBJECT = (
        "not_an_object",
        "valid JSON, but not an object (an array, a string, …)",
        "a new shape from the provider, or another sender: fix the parser, then replay",
    )
    INVALID_XML = (
        "invalid_xml",
        "not well-formed XML, or in an encoding we do not accept (UTF-16, EBCDIC, multi-byte)",
        "cut short in transit, or a new shape: compare with the provider's documentation",
    )
    XML_DOCTYPE_FORBIDDEN = (
        "xml_doctype_forbidden",
        "the XML contains `<!DOCTYPE` or `<!ENTITY` (refused before parsing: no entity expansion)",
        "never sent by the provider: find the sender by the `client-addr` header",
    )
    UNKNOWN_ROOT = (
        "unknown_root",
        "XML whose root is neither `POSTBACK` nor `postback`",
        "a new XML dialect, or another sender: fix the parser, then replay",
    )
    MISSING_ORIGIN = (
        "missing_origin",
        "no usable `origin` (absent, empty, not text, or repeated)",
        "an API error document or a new shape: read `dlq-detail`; fix, then replay",
    )
    MISSING_CODE = (
        "missing_code",
        "no usable `code` (or v1 `STATUSCODE`)",
        "an API error document or a new shape: read `dlq-detail`; fix, then replay",
    )
    ENRICH_FAILED = (
        "enrich_failed",
        "the body parsed, but building its event raised: a bug in the processor",
        "report it with the dead letter (`dlq-detail` names the error); fix, then replay",
    )

    meaning: str
    action: str

    def __new__(cls, label: str, meaning: str, action: str) -> DeadLetterReason:
        member = str.__new__(cls, label)
        member._value_ = label
        member.meaning = meaning
        member.action = action
        return member


REASON: Final = "dlq-reason"  # a short stable label, e.g. invalid_json
DETAIL: Final = "dlq-detail"  # what exactly was wrong, bounded in length
SOURCE_TOPIC: Final = "dlq-source-topic"
SOURCE_PARTITION: Final = "dlq-source-partition"
SOURCE_OFFSET: Final = "dlq-source-offset"
FAILED_AT: Final = "dlq-failed-at"  # epoch ms

DETAIL_LIMIT: Final = 500


def dead_letter_headers(
    raw_headers: Headers | None,
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    now_ms: int | None = None,
) -> Headers:
    failed_at = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return [
        *(raw_headers or ()),
        (REASON, reason.encode()),
        (DETAIL, detail[:DETAIL_LIMIT].encode(errors="replace")),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (FAILED_AT, str(failed_at).encode()),
    ]
