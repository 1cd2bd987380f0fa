"""The partition of a key: the one Kafka's default partitioner picks. Pure.

Every Kafka client's default partitioner maps a key to murmur2(key) (the positive part)
modulo the partition count, and the pipeline relies on it: a message's notifications and their
retries share a raw partition, its events share an events partition, and every other producer
of those topics (a replay, another tool) agrees for the same key. The edge and the processor
compute it themselves because aiokafka's pure-Python murmur2 and the partition lists it builds
around it cost about a tenth of the edge's own work per postback; this murmur2 reads the key
four bytes at a time and gives the same numbers.
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data`, as an unsigned 32-bit number (as aiokafka returns it)."""
    length = len(data)
    h = _SEED ^ length
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length - whole
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h = ((h ^ data[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def default_partition(key: bytes, partitions: int) -> int:
    """The partition, of `partitions`, that Kafka's default partitioner gives `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
