"""What one committed batch changed in a dedupe window, and its bytes for a changelog record.

A `WindowDelta` is the keys a batch added, grouped by slot, plus the high water after the batch:
applying the deltas of a window's commits, in order, to a fresh window rebuilds it exactly
(`DedupeWindow.pending_delta` / `apply_delta`). A snapshot is the same thing for a whole state,
cut in parts of bounded size; its first part `replaces` whatever state it is applied to, so a
reader can apply a changelog from its start and land on the latest snapshot's state.

Encoding, format version 1 (all integers big-endian)::

    offset  size  field
    0       1     format version: 1
    1       1     flags: bit 0 set = replaces the state (first part of a snapshot); others 0
    2       8     slot_ms, int64: the width of a slot; applying refuses a different one
    10      8     high_water_ms, int64: event time; -2**63 = none yet
    18      4     number of slot sections, uint32
    then each section, slot ids strictly ascending:
            8     slot id, int64: event time // slot_ms
            4     number of keys n, uint32 (at least 1)
            16*n  the keys: 16-byte digests, strictly ascending as unsigned big-endian numbers

A reader rejects versions it does not know rather than guessing; a later version may add
fields after the sections or new flag bits, and must keep the version byte first.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from consumers.processor.runs import DIGEST_SIZE

FORMAT_VERSION: Final = 1
REPLACES: Final = 0x01

_HEADER: Final = struct.Struct(">BBqqI")
_SECTION: Final = struct.Struct(">qI")
_NO_TIME: Final = -(1 << 63)


class WindowDelta(NamedTuple):
    slot_ms: int
    high_water_ms: int | None
    slots: tuple[tuple[int, bytes], ...]
    """(slot id, the slot's new keys concatenated in ascending order), slot ids ascending."""
    replaces: bool = False

    @property
    def keys(self) -> int:
        return sum(len(digests) for _, digests in self.slots) // DIGEST_SIZE


def encoded_size(sections: int, keys: int) -> int:
    """Bytes of an encoded delta with this many slot sections and keys."""
    return _HEADER.size + sections * _SECTION.size + keys * DIGEST_SIZE


def encode(delta: WindowDelta) -> bytes:
    high_water = _NO_TIME if delta.high_water_ms is None else delta.high_water_ms
    parts = [
        _HEADER.pack(
            FORMAT_VERSION,
            REPLACES if delta.replaces else 0,
            delta.slot_ms,
            high_water,
            len(delta.slots),
        )
    ]
    for slot_id, digests in delta.slots:
        parts.append(_SECTION.pack(slot_id, len(digests) // DIGEST_SIZE))
        parts.append(digests)
    return b"".join(parts)


def decode(data: bytes | memoryview) -> WindowDelta:
    """The delta in `data`; ValueError, saying what is wrong, for anything but a whole v1 delta.

    Key order inside a section is checked by `DedupeWindow.apply_delta`, which sorts anyway.
    """
    view = memoryview(data)
    if len(view) < 1:
        raise ValueError("window delta: empty record")
    if view[0] != FORMAT_VERSION:
        raise ValueError(
            f"window delta: format version {view[0]} is not one this reader knows "
            f"({FORMAT_VERSION})"
        )
    if len(view) < _HEADER.size:
        raise ValueError(f"window delta: {len(view)} bytes, shorter than its header")
    _, flags, slot_ms, high_water, sections = _HEADER.unpack_from(view)
    if flags & ~REPLACES:
        raise ValueError(f"window delta: unknown flags {flags:#04x}")
    if slot_ms < 1:
        raise ValueError(f"window delta: slot_ms={slot_ms} must be positive")
    offset = _HEADER.size
    slots: list[tuple[int, bytes]] = []
    for _ in range(sections):
        if offset + _SECTION.size > len(view):
            raise ValueError("window delta: truncated inside a slot section header")
        slot_id, count = _SECTION.unpack_from(view, offset)
        offset += _SECTION.size
        end = offset + count * DIGEST_SIZE
        if count == 0 or end > len(view):
            raise ValueError(f"window delta: slot {slot_id} claims {count} keys")
        if slots and slot_id <= slots[-1][0]:
            raise ValueError(f"window delta: slot {slot_id} out of order")
        slots.append((slot_id, bytes(view[offset:end])))
        offset = end
    if offset != len(view):
        raise ValueError(f"window delta: {len(view) - offset} bytes after the last section")
    return WindowDelta(
        slot_ms=slot_ms,
        high_water_ms=None if high_water == _NO_TIME else high_water,
        slots=tuple(slots),
        replaces=bool(flags & REPLACES),
    )
