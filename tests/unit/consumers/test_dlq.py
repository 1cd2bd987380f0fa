"""Dead letters: the raw record kept whole, with headers saying why and where it came from, for
reasons from one table that the docs list too."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from common import raw_record
from consumers import dlq
from consumers.dlq import DeadLetterReason, dead_letter_headers
from consumers.processor.parse import REASONS, Unparseable, parse

EVENTS_DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"
EDGE_HEADERS = [(raw_record.RECEIVED_AT, b"1709648570000"), (raw_record.SOURCE, b"mt")]


def documented_reasons() -> dict[str, tuple[str, str]]:
    """reason -> (meaning, what to do), as docs/events.md's "Dead letters" table has them."""
    section = EVENTS_DOC.read_text().split("## Dead letters", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| (.*) \| (.*) \|$", section, flags=re.MULTILINE)
    return {reason: (meaning, action) for reason, meaning, action in rows}


def test_the_docs_list_exactly_the_reasons_of_the_table() -> None:
    """Every reason a dead letter can carry is documented, with the table's meaning and advice,
    and the docs name no reason the code cannot give."""
    assert documented_reasons() == {
        reason.value: (reason.meaning, reason.action) for reason in DeadLetterReason
    }


def test_a_reason_is_its_label_wherever_it_goes() -> None:
    """A reason goes into the `dlq-reason` header and the metric label as its plain label."""
    headers = dict(
        dead_letter_headers(
            [], reason=DeadLetterReason.MISSING_CODE, detail="", topic="t", partition=0, offset=0
        )
    )
    assert headers[dlq.REASON] == b"missing_code"
    assert {str(reason) for reason in DeadLetterReason} == {r.value for r in DeadLetterReason}
    assert len({reason.value for reason in DeadLetterReason}) == len(DeadLetterReason)


def test_the_parser_refuses_only_with_reasons_of_the_table() -> None:
    """Every refusal of the parser names a table reason; enrich_failed is the pipeline's own."""
    assert set(REASONS) == set(DeadLetterReason) - {DeadLetterReason.ENRICH_FAILED}
    with pytest.raises(Unparseable) as refused:
        parse(b"[]")
    assert refused.value.reason is DeadLetterReason.NOT_AN_OBJECT


def test_a_dead_letter_keeps_the_edges_headers_and_says_where_it_came_from() -> None:
    """The edge's headers stay first and unchanged, so a replay after a fix has everything the
    first attempt had; the dlq-* headers say why, from which record, and when."""
    headers = dead_letter_headers(
        EDGE_HEADERS,
        reason="invalid_json",
        detail="unexpected end of data",
        topic="postbacks.raw",
        partition=4,
        offset=981,
        now_ms=1_709_648_571_234,
    )
    assert headers[: len(EDGE_HEADERS)] == EDGE_HEADERS
    assert dict(headers[len(EDGE_HEADERS) :]) == {
        dlq.REASON: b"invalid_json",
        dlq.DETAIL: b"unexpected end of data",
        dlq.SOURCE_TOPIC: b"postbacks.raw",
        dlq.SOURCE_PARTITION: b"4",
        dlq.SOURCE_OFFSET: b"981",
        dlq.FAILED_AT: b"1709648571234",
    }


def test_a_dead_letter_without_edge_headers_still_says_why() -> None:
    """A raw record written by another tool, without headers, is dead-lettered all the same."""
    headers = dead_letter_headers(
        None, reason="empty_body", detail="", topic="raw", partition=0, offset=0, now_ms=1
    )
    assert [name for name, _ in headers] == [
        dlq.REASON,
        dlq.DETAIL,
        dlq.SOURCE_TOPIC,
        dlq.SOURCE_PARTITION,
        dlq.SOURCE_OFFSET,
        dlq.FAILED_AT,
    ]


def test_the_detail_is_bounded_and_always_valid_utf8() -> None:
    """A detail quoting a hostile body cannot make a header of unbounded size or invalid UTF-8."""
    detail = "\udcff" + "x" * 10_000  # a lone surrogate, as a decoded bad body may hold
    headers = dict(
        dead_letter_headers(
            [], reason="invalid_utf8", detail=detail, topic="t", partition=0, offset=0, now_ms=1
        )
    )
    written = headers[dlq.DETAIL]
    assert len(written) <= dlq.DETAIL_LIMIT
    assert written.decode("utf-8").startswith("?x")


def test_failed_at_is_the_current_time_unless_given() -> None:
    """Without `now_ms`, a dead letter is stamped with the wall clock in epoch ms."""
    before = time.time_ns() // 1_000_000
    headers = dict(
        dead_letter_headers([], reason="empty_body", detail="", topic="t", partition=0, offset=0)
    )
    after = time.time_ns() // 1_000_000
    assert before <= int(headers[dlq.FAILED_AT]) <= after
