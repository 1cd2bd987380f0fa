"""The edge's partition choice is Kafka's default partitioner's, key for key."""

from __future__ import annotations

import os

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from common.partitioning import default_partition, murmur2


@given(st.binary(max_size=300))
def test_murmur2_is_kafkas(key: bytes) -> None:
    """Any key hashes as in every Kafka client (aiokafka's pure-Python port as the reference)."""
    assert murmur2(key) == aiokafka_murmur2(key)


def test_known_values_from_the_java_client() -> None:
    """Values the Java client's Utils.murmur2 gives (its test suite), as unsigned numbers."""
    assert murmur2(b"21") & 0xFFFFFFFF == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == -985981536 & 0xFFFFFFFF
    assert murmur2(b"") & 0xFFFFFFFF == 275646681


@given(st.binary(min_size=1, max_size=64), st.integers(1, 64))
def test_the_partition_is_the_default_partitioners(key: bytes, partitions: int) -> None:
    """A key lands where aiokafka's default partitioner (and Java's) would put it."""
    every = list(range(partitions))
    assert default_partition(key, partitions) == DefaultPartitioner()(key, every, every)


def test_tracking_ids_and_body_hashes_spread_like_kafkas() -> None:
    """The keys the edge makes (tracking ids, 32 hex digits) agree in bulk too."""
    every = list(range(6))
    for _ in range(2000):
        key = os.urandom(16).hex().encode()
        assert default_partition(key, 6) == DefaultPartitioner()(key, every, every)
