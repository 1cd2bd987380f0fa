"""Which partition of `postbacks.events` an event goes to: the one Kafka's default partitioner
would pick for its key, usually without hashing anything.

The event key is the tracking id, so that all events of one message stay ordered in one
partition for everyone who reads them, and the partition must be the one any Kafka client's
default partitioner gives that key (murmur2 of the key bytes, modulo the partition count), so
that other producers of the topic (a replay, another tool) agree with us.

Hashing costs a few microseconds per key even with `common.partitioning`'s murmur2 (aiokafka's
takes about 10 µs). Most of the time the answer is already known: the edge
keyed the raw record with the same tracking id and the default partitioner put it in raw
partition p, so when the event's key equals the raw record's key and both topics have the
same number of partitions, the event's partition is p too. Only events keyed otherwise (no
tracking id: the edge keyed the body hash, the event is keyed by its event id) are hashed.

That rests on the raw topic being written with the default partitioner, as the edge does. The
partitioner checks it: the first record of each raw partition, and one in `CHECK_EVERY` after
it, is hashed anyway, and at the first disagreement this raw partition's events are hashed
from then on (and a warning logged), so another writer of the raw topic costs speed, never
the per-message ordering of what follows.

If the raw topic's partition count was raised after records were written, old records sit in
partitions that murmur2 no longer maps their key to; the default partitioner re-maps keys at
that moment anyway, so the ordering of a message that spans the change is lost either way.
"""

from __future__ import annotations

import logging
from typing import Final

from common.partitioning import default_partition

log = logging.getLogger("consumers.processor")

CHECK_EVERY: Final = 1000


class EventPartitioner:
    """Chooses events partitions for the records of one raw partition."""

    __slots__ = ("_events_partitions", "_raw_partition", "_same_layout", "_until_check")

    def __init__(
        self, raw_partition: int, raw_partitions: int | None, events_partitions: int
    ) -> None:
        """`raw_partitions` None (not known) means: hash every event."""
        if raw_partition < 0 or events_partitions < 1:
            raise ValueError(
                f"raw partition {raw_partition}, {events_partitions} events partitions"
            )
        self._raw_partition = raw_partition
        self._events_partitions = events_partitions
        self._same_layout = raw_partitions == events_partitions
        self._until_check = 0

    def partition(self, event_key: bytes, raw_key: bytes | None) -> int:
        """The events partition for an event keyed `event_key` made from a record keyed
        `raw_key` (as the raw record was stored, in this partitioner's raw partition)."""
        if self._same_layout and event_key == raw_key:
            if self._until_check:
                self._until_check -= 1
                return self._raw_partition
            self._until_check = CHECK_EVERY - 1
            hashed = default_partition(event_key, self._events_partitions)
            if hashed != self._raw_partition:
                self._same_layout = False
                log.warning(
                    "raw records are not partitioned by their key's hash; hashing every event",
                    extra={"fields": {"partition": self._raw_partition}},
                )
            return hashed
        return default_partition(event_key, self._events_partitions)
