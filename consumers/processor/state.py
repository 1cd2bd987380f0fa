"""A partition's state change as changelog bytes: the dedupe window's and the latency join's.

Each committed transaction of a raw partition writes what it changed in both state structures
(`StateDelta`) to the state topic, in the same Kafka transaction as its events and offsets.
Applying a partition's deltas in commit order to a fresh pipeline rebuilds the state the
previous owner had, without re-reading or re-parsing a raw record; a snapshot is the same for
a whole state, split in parts that each fit a record.

Encoding, format version 1 (integers big-endian)::

    1 byte   format version: 1
    4 bytes  length n of the window delta (uint32)
    n bytes  the window delta (consumers/processor/delta.py)
    rest     the latency join delta (consumers/processor/latency.py, LatencyDelta)

A reader refuses a version it does not know rather than guessing.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from consumers.processor import delta as window_delta
from consumers.processor.delta import WindowDelta
from consumers.processor.latency import LatencyDelta, Op, op_bytes
from consumers.processor.runs import DIGEST_SIZE

FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct(">BI")
MAX_PART_BYTES: Final = 512 * 1024  # well under the broker's default 1 MB record limit


class StateDelta(NamedTuple):
    window: WindowDelta
    latency: LatencyDelta

    @property
    def replaces(self) -> bool:
        """The first part of a snapshot: applied, it replaces the whole state."""
        return self.window.replaces

    def encode(self) -> bytes:
        window = window_delta.encode(self.window)
        return _HEADER.pack(FORMAT_VERSION, len(window)) + window + self.latency.encode()

    @classmethod
    def decode(cls, data: bytes | memoryview) -> StateDelta:
        """The delta in `data`; ValueError, saying what is wrong, for anything else."""
        view = memoryview(data)
        if len(view) < _HEADER.size:
            raise ValueError(f"state delta: {len(view)} bytes, shorter than its header")
        version, length = _HEADER.unpack_from(view)
        if version != FORMAT_VERSION:
            raise ValueError(
                f"state delta: format version {version} is not one this reader knows "
                f"({FORMAT_VERSION})"
            )
        start = _HEADER.size
        if start + length > len(view):
            raise ValueError("state delta: truncated window delta")
        window = window_delta.decode(view[start : start + length])
        return cls(window, LatencyDelta.decode(view[start + length :]))


def in_parts(delta: StateDelta, max_bytes: int = MAX_PART_BYTES) -> list[StateDelta]:
    """`delta` cut into deltas of at most about `max_bytes` encoded each, to be applied in
    order: the keys and the operations are shared out, every part keeps the high waters, and
    only the first part `replaces` (for a snapshot)."""
    key_room = max(1, (max_bytes // 2) // DIGEST_SIZE)
    windows: list[tuple[tuple[int, bytes], ...]] = []
    sections: list[tuple[int, bytes]] = []
    keys = 0
    for slot_id, digests in delta.window.slots:
        start = 0
        while start < len(digests):
            take = min(len(digests) - start, (key_room - keys) * DIGEST_SIZE)
            sections.append((slot_id, digests[start : start + take]))
            keys += take // DIGEST_SIZE
            start += take
            if keys >= key_room:
                windows.append(tuple(sections))
                sections, keys = [], 0
    if sections or not windows:
        windows.append(tuple(sections))
    latencies: list[tuple[Op, ...]] = []
    piece: list[Op] = []
    room = max_bytes // 2
    for op in delta.latency.ops:
        size = op_bytes(op)
        if piece and room < size:
            latencies.append(tuple(piece))
            piece, room = [], max_bytes // 2
        piece.append(op)
        room -= size
    latencies.append(tuple(piece))
    window, latency = delta.window, delta.latency
    return [
        StateDelta(
            window._replace(
                slots=windows[index] if index < len(windows) else (),
                replaces=window.replaces and index == 0,
            ),
            latency._replace(
                ops=latencies[index] if index < len(latencies) else (),
                replaces=latency.replaces and index == 0,
            ),
        )
        for index in range(max(len(windows), len(latencies)))
    ]
