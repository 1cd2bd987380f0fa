"""Where a raw postback came from: the facts enrichment needs besides the body itself."""

from __future__ import annotations

from typing import NamedTuple


class RawMeta(NamedTuple):
    """The raw record's coordinates and the edge's facts about the request.

    The runtime builds one per consumed record: topic/partition/offset from Kafka become the
    event's lineage; `received_at_ms` (epoch milliseconds when the edge accepted the request),
    `source` (the edge's label for where it came from) and `content_type` come from the raw
    record's headers and are None when a header is absent or unreadable.

    A NamedTuple, like every object the pipeline makes per record: a frozen dataclass's
    `__init__` sets each field through `object.__setattr__`, several times slower.
    """

    topic: str
    partition: int
    offset: int
    received_at_ms: int | None = None
    source: str | None = None
    content_type: str | None = None
