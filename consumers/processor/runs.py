"""Sorted, packed sets of 16-byte digests: where the dedupe window keeps its keys.

A `Run` holds digests concatenated in one buffer, in ascending order (as unsigned big-endian
numbers) and free of repeats: 16 bytes a key, where a `bytes` object in a Python set costs
80-100. A directory of byte offsets by the digests' leading bits (a uint32 per bucket of a few
keys) narrows a lookup to a few neighbouring keys, which one `find` compares in full, in C.
Digests are BLAKE2b outputs, so their leading bits are uniform and need no hashing. Large runs
live in anonymous memory maps of their own rather than on the C heap: every merge frees a run
and allocates a slightly larger one, and glibc would keep the freed ones' space on its heap
instead of returning it to the system.

Lookups take a `prefix`: the digest's leading `PREFIX_BITS` bits, small enough to be a
single-digit Python int, so that the arithmetic of a lookup allocates little.

Runs are immutable: adding keys builds a new run by merging, an O(n) copy, which is why the
window collects new keys in a small dict and merges them in bulk. Sorted order also makes a set
of keys have one representation however it was built: `without_smallest` drops the same keys
whatever the merge history, and `digests` gives the same bytes for the same set.

`SlotMask` says, per prefix bucket, which slots may hold a key with that prefix: a lookup for a
new key (most lookups) then usually finds every bit clear and reads no run at all. It can only
say "maybe" or "certainly not"; every "seen" answer still comes from comparing whole digests.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

DIGEST_SIZE: Final = 16
PREFIX_BITS: Final = 30
MAPPED_RUN_BYTES: Final = 1 << 20
"""Runs this large or larger get a memory map of their own."""
KEYS_PER_BUCKET: Final = 8
"""Average keys per directory bucket of a run: under a byte of directory a key, and a find
over 128 bytes."""

Keys: TypeAlias = bytearray | mmap.mmap
"""A run's digests, concatenated: both have the buffer protocol and `find`."""

Probe: TypeAlias = tuple[int, memoryview, Keys]
"""A run as a lookup reads it: (directory shift, directory, keys)."""

U64: TypeAlias = npt.NDArray[np.uint64]
Rows: TypeAlias = npt.NDArray[np.uint64]
"""Digests as an (n, 2) array of big-endian uint64 halves: one row a digest."""

_HALVES: Final = np.dtype(">u8")
_DIGEST: Final = np.dtype("V16")
_WORDS: Final = np.dtype(">u4")
_U32_LIMIT: Final = 1 << 32
_SMALLEST_MASK: Final = 1024


def prefix(digest: bytes) -> int:
    """The digest's leading PREFIX_BITS bits: what `Run` and `SlotMask` index by."""
    return int.from_bytes(digest[:4], "big") >> (32 - PREFIX_BITS)


def holds(probes: Sequence[Probe], head: int, digest: bytes) -> bool:
    """Whether one of these runs holds `digest`, whose `prefix` is `head`. The hot path of a
    lookup, hence probes rather than `Run` methods."""
    for shift, directory, keys in probes:
        bucket = head >> shift
        end = directory[bucket + 1]
        at = keys.find(digest, directory[bucket], end)
        while at >= 0:
            if not at % DIGEST_SIZE:  # a match straddling two keys is no match
                return True
            at = keys.find(digest, at + 1, end)
    return False


def rows_of(digests: bytes | Keys | memoryview) -> Rows:
    """A view of concatenated digests as rows (no copy)."""
    if len(digests) % DIGEST_SIZE:
        raise ValueError(
            f"{len(digests)} bytes is not a whole number of {DIGEST_SIZE}-byte digests"
        )
    return np.frombuffer(digests, dtype=_HALVES).reshape(-1, 2)


def concat(parts: Sequence[Rows]) -> Rows:
    """Rows one after the other (np.concatenate alone would turn them little-endian)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, dtype=_HALVES)


def digests_of(rows: Rows) -> bytes:
    """The rows as concatenated digests, whatever their byte order in memory."""
    return rows.astype(_HALVES, copy=False).tobytes()


def _allocate(size: int) -> Keys:
    """A zeroed buffer for a run: its own memory map when large, so that freeing it returns
    the memory to the system."""
    return mmap.mmap(-1, size) if size >= MAPPED_RUN_BYTES else bytearray(size)


def _packed(rows: Rows) -> Keys:
    """The rows as concatenated digests in a new buffer, copied once."""
    keys = _allocate(len(rows) * DIGEST_SIZE)
    rows_of(keys)[:] = rows
    return keys


def prefixes(rows: Rows) -> npt.NDArray[np.uint32]:
    """Each row's `prefix`, vectorised."""
    words = rows.astype(_HALVES, copy=False).view(_WORDS)[:, 0]
    return np.right_shift(words, np.uint32(32 - PREFIX_BITS), dtype=np.uint32)


def sort_unique(rows: Rows) -> Rows:
    """The rows in ascending order, each once. Cheap when already sorted (a snapshot)."""
    if len(rows) < 2:
        return rows
    hi = rows[:, 0].astype(np.uint64)
    if np.all(hi[1:] > hi[:-1]):
        return rows
    order = _order_by_top_bits(hi)
    top = hi[order] >> np.uint64(32)
    tied = np.flatnonzero(top[1:] == top[:-1])  # a few hundred in millions of digests
    if len(tied):
        _order_ties(rows, order, tied)
        sorted_hi, sorted_lo = rows[order, 0], rows[order, 1]
        keep = np.ones(len(order), dtype=bool)
        np.logical_or(
            sorted_hi[1:] != sorted_hi[:-1], sorted_lo[1:] != sorted_lo[:-1], out=keep[1:]
        )
        if not keep.all():
            order = order[keep]
    return _gather(rows, order)


def _order_by_top_bits(hi: U64) -> npt.NDArray[np.intp]:
    """The order of `hi` by its top 32 bits: two passes of numpy's radix sort (stable argsort
    of 16-bit digits, least significant first), twice as fast as a comparison sort here."""
    low_digit = (hi >> np.uint64(32)).astype(np.uint16)
    order = np.argsort(low_digit, kind="stable")
    high_digit = (hi >> np.uint64(48)).astype(np.uint16)
    return order[np.argsort(high_digit[order], kind="stable")]


def _order_ties(rows: Rows, order: npt.NDArray[np.intp], tied: npt.NDArray[np.intp]) -> None:
    """Put each stretch of `order` whose rows share their top 32 bits (`tied` marks the
    first of each equal neighbour pair) in full (hi, lo) order, in place."""
    breaks = np.flatnonzero(np.diff(tied) != 1)
    starts = np.concatenate((tied[:1], tied[breaks + 1]))
    stops = np.concatenate((tied[breaks], tied[-1:])) + 2
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        stretch = order[start:stop]
        order[start:stop] = stretch[
            np.lexsort((rows[stretch, 1].astype(np.uint64), rows[stretch, 0].astype(np.uint64)))
        ]


def _gather(rows: Rows, order: npt.NDArray[np.intp]) -> Rows:
    """rows[order], moving each digest as one 16-byte item (several times faster)."""
    digests = np.ascontiguousarray(rows, dtype=_HALVES).view(_DIGEST).ravel()
    return digests[order].view(_HALVES).reshape(-1, 2)


class Run:
    """An immutable sorted set of digests. Build with `Run.of` (any order) or `merged_with`."""

    __slots__ = ("_directory", "_shift", "keys")

    def __init__(self, keys: Keys) -> None:
        """`keys`: digests already in ascending order without repeats, concatenated."""
        self.keys = keys
        count = len(keys) // DIGEST_SIZE
        bits = min(PREFIX_BITS, max(1, (count // KEYS_PER_BUCKET).bit_length()))
        self._shift = PREFIX_BITS - bits
        starts = np.arange(1 << bits, dtype=np.uint32) << np.uint32(self._shift)
        offsets = np.empty((1 << bits) + 1, dtype=np.int64)
        offsets[:-1] = np.searchsorted(prefixes(rows_of(keys)), starts)
        offsets[-1] = count
        offsets *= DIGEST_SIZE
        self._directory = offsets.astype(np.uint32 if len(keys) < _U32_LIMIT else np.uint64)

    @classmethod
    def of(cls, rows: Rows) -> Run:
        return cls(_packed(sort_unique(rows)))

    def __len__(self) -> int:
        return len(self.keys) // DIGEST_SIZE

    @property
    def nbytes(self) -> int:
        return len(self.keys) + int(self._directory.nbytes)

    def rows(self) -> Rows:
        return rows_of(self.keys)

    def probe(self) -> Probe:
        """What `holds` reads."""
        return self._shift, self._directory.data, self.keys

    def contains(self, digest: bytes) -> bool:
        return holds((self.probe(),), prefix(digest), digest)

    def merged_with(self, rows: Rows) -> Run:
        """A run holding this run's keys and these rows (ascending, unique; repeats of ours
        are fine). Besides the new run it allocates ~4 bytes a key, so that a merge's peak
        stays near the two runs' size."""
        if not len(rows):
            return self
        old = self.rows()
        if not len(old):
            return Run(_packed(rows))
        old_hi = old[:, 0].astype(np.uint64)
        new_hi = rows[:, 0].astype(np.uint64)
        at = np.searchsorted(old_hi, new_hi)
        shared = bool(np.any(old_hi[np.minimum(at, len(old) - 1)] == new_hi))
        del old_hi, new_hi
        if shared:
            # A leading half we hold already: a repeat, or 64 bits shared by two digests
            # (about once in a million windows of ten million keys). The slow, general way.
            return Run.of(concat((old, rows)))
        at += np.arange(len(rows))  # where each new key lands in the merged run
        keys = _allocate(len(self.keys) + rows.nbytes)
        merged = np.frombuffer(keys, dtype=_DIGEST)
        is_old = np.ones(len(merged), dtype=bool)
        is_old[at] = False
        merged[at] = rows.astype(_HALVES, copy=False).view(_DIGEST).ravel()
        merged[is_old] = np.frombuffer(self.keys, dtype=_DIGEST)
        del merged, is_old
        return Run(keys)

    def without_smallest(self, count: int) -> Run:
        """This run less its `count` smallest digests."""
        kept = memoryview(self.keys)[count * DIGEST_SIZE :]
        keys = _allocate(len(kept))
        memoryview(keys)[:] = kept
        kept.release()
        return Run(keys)

    def digests(self, start: int = 0, stop: int | None = None) -> bytes:
        """Keys `start` to `stop` in ascending order, concatenated."""
        end = len(self.keys) if stop is None else stop * DIGEST_SIZE
        return bytes(self.keys[start * DIGEST_SIZE : end])


EMPTY_RUN: Final = Run(bytearray())


class Staging:
    """Digests appended for one slot, to be sorted into a run in one go: a buffer that
    doubles as it fills, in a memory map of its own once large, like a run."""

    __slots__ = ("_buffer", "_size")

    def __init__(self) -> None:
        self._buffer: Keys = bytearray()
        self._size = 0

    def __len__(self) -> int:
        return self._size // DIGEST_SIZE

    def append(self, digests: bytes) -> None:
        size = self._size + len(digests)
        if size > len(self._buffer):
            bigger = _allocate(max(size, 2 * len(self._buffer)))
            memoryview(bigger)[: self._size] = memoryview(self._buffer)[: self._size]
            self._buffer = bigger
        memoryview(self._buffer)[self._size : size] = digests
        self._size = size

    def rows(self) -> Rows:
        """The digests appended, as rows over the buffer (no copy)."""
        return rows_of(memoryview(self._buffer)[: self._size])


class SlotMask:
    """Per prefix bucket, a byte whose bit `slot_id % 8` is set if that slot's run may hold a
    key with that prefix. Never a false "certainly not": bits are set for every key merged into
    a run and cleared only when the slot's run is dropped whole; a key dropped from a run alone
    (the cap) leaves a bit that merely costs a lookup. Live slots never span more than five
    consecutive ids, so a bit stands for one slot at a time."""

    __slots__ = ("shift", "table")

    def __init__(self, bits: int = 10) -> None:
        self.shift = PREFIX_BITS - bits
        self.table = bytearray(1 << bits)

    @staticmethod
    def bit(slot_id: int) -> int:
        return 1 << (slot_id & 7)

    @staticmethod
    def by_flags(probes: Sequence[tuple[int, Probe]]) -> list[list[Probe]]:
        """For each value of a mask byte, the probes of the (slot id, probe) pairs whose bit
        it has, in the given order: a lookup reads one list instead of testing every bit."""
        return [
            [probe for slot_id, probe in probes if flags & SlotMask.bit(slot_id)]
            for flags in range(256)
        ]

    @property
    def nbytes(self) -> int:
        return len(self.table)

    def add(self, slot_id: int, rows: Rows) -> None:
        table = np.frombuffer(self.table, dtype=np.uint8)
        table[prefixes(rows) >> np.uint32(self.shift)] |= np.uint8(self.bit(slot_id))

    def drop(self, slot_id: int) -> None:
        table = np.frombuffer(self.table, dtype=np.uint8)
        table &= np.uint8(~self.bit(slot_id) & 0xFF)

    def fits(self, keys: int) -> bool:
        """Whether the table suits this many keys: 1/8 to 1 key a byte (else `sized`). At
        1/2 a byte, a new key's byte is clear 61% of the time and it reads half a run on
        average; the table costs 2 bytes a key."""
        size = len(self.table)
        return keys <= size and (size <= _SMALLEST_MASK or 8 * keys > size)

    @classmethod
    def sized(cls, keys: int, runs: dict[int, Run]) -> SlotMask:
        """A mask of 1/4 to 1/2 key a byte for `keys`, holding these runs' bits."""
        bits = max(_SMALLEST_MASK.bit_length() - 1, keys.bit_length() + 1)
        mask = cls(min(PREFIX_BITS, bits))
        for slot_id, run in runs.items():
            mask.add(slot_id, run.rows())
        return mask
