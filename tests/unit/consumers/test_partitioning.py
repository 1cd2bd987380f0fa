"""Events land in the partition Kafka's default partitioner gives their key, hashed or not."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.partitioning import default_partition
from consumers.partitioning import CHECK_EVERY, EventPartitioner

keys = st.binary(min_size=1, max_size=64)
counts = st.integers(min_value=1, max_value=64)


@settings(max_examples=300, deadline=None)
@given(keys, keys, counts)
def test_every_event_goes_where_its_key_hashes(event_key: bytes, other: bytes, count: int) -> None:
    """Same key as the raw record or not, the chosen partition is the key's hash partition."""
    raw_partition = default_partition(event_key, count)
    partitioner = EventPartitioner(raw_partition, count, count)
    for _ in range(3):
        assert partitioner.partition(event_key, event_key) == raw_partition
    other_partitioner = EventPartitioner(default_partition(other, count), count, count)
    assert other_partitioner.partition(event_key, other) == raw_partition


@settings(max_examples=100, deadline=None)
@given(keys, st.integers(min_value=1, max_value=32), st.integers(min_value=1, max_value=32))
def test_different_partition_counts_hash_every_event(key: bytes, raw: int, events: int) -> None:
    partitioner = EventPartitioner(default_partition(key, raw), raw, events)
    assert partitioner.partition(key, key) == default_partition(key, events)


def test_an_unknown_raw_layout_hashes_every_event() -> None:
    key = b"tracking-1"
    assert EventPartitioner(0, None, 12).partition(key, key) == default_partition(key, 12)


def test_raw_records_not_placed_by_their_hash_switch_hashing_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another writer of the raw topic (round robin, say) is caught at the first record and
    costs speed from then on, never the per-key placement of events."""
    count = 6
    stray = [f"key-{n}".encode() for n in range(200)]
    wrong = EventPartitioner(3, count, count)  # every key below claims raw partition 3
    with caplog.at_level(logging.WARNING, logger="consumers.processor"):
        placed = [wrong.partition(key, key) for key in stray]
    assert placed == [default_partition(key, count) for key in stray]
    assert "not partitioned by their key's hash" in caplog.text


def test_a_stray_raw_record_after_good_ones_is_caught_by_the_periodic_check() -> None:
    count = 6
    good = [f"good-{n}".encode() for n in range(10_000)]
    good = [key for key in good if default_partition(key, count) == 2]
    stray = next(
        f"stray-{n}".encode()
        for n in range(1000)
        if default_partition(f"stray-{n}".encode(), count) != 2
    )
    partitioner = EventPartitioner(2, count, count)
    for key in good[:CHECK_EVERY]:
        partitioner.partition(key, key)
    # The next record is checked: the stray one is hashed, and so is everything after it.
    assert partitioner.partition(stray, stray) == default_partition(stray, count)
    assert partitioner.partition(stray, stray) == default_partition(stray, count)
