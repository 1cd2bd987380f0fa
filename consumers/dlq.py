"""Dead letters: the raw value untouched, with headers saying why and where it came from.

A dead letter keeps every header the edge wrote (received-at, source, request id ...) and adds
`dlq-*` headers, so that a replay after a parser fix has everything the first attempt had.
"""

from __future__ import annotations

import time
from typing import Final

from common.raw_record import Headers

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
