"""Packed runs of digests: exact membership, one representation per set of keys."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.runs import (
    DIGEST_SIZE,
    EMPTY_RUN,
    MAPPED_RUN_BYTES,
    Run,
    SlotMask,
    prefix,
    rows_of,
    sort_unique,
)
from consumers.processor.window import DedupeWindow

T0 = 1_764_000_000_000
PREFIX = bytes.fromhex("12345678")


def digest(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "big"), digest_size=DIGEST_SIZE).digest()


def run_of(*digests: bytes) -> Run:
    return Run.of(rows_of(b"".join(digests)))


def test_a_match_straddling_two_keys_is_no_match() -> None:
    """Bytes that span the end of one stored key and the start of the next are not a key,
    even though they sit in the same directory bucket."""
    first = PREFIX + bytes(4) + PREFIX + bytes.fromhex("aabbccdd")
    second = PREFIX + bytes.fromhex("00000001") + bytes(8)
    straddling = first[8:] + second[:8]
    assert prefix(straddling) == prefix(first) == prefix(second)
    run = run_of(first, second)
    assert (run.contains(first), run.contains(second)) == (True, True)
    assert (first + second).find(straddling) == 8
    assert run.contains(straddling) is False
    window = DedupeWindow(buffer_keys=1)
    for stored in (first, second):
        window.seen_or_add(stored, T0)
    window.commit()
    assert window.seen_or_add(straddling, T0) is False


def test_digests_sharing_their_leading_half_are_told_apart() -> None:
    """Two digests equal in their first 8 bytes sort, merge and answer as any others."""
    low, high = PREFIX * 2 + bytes(7) + b"\x01", PREFIX * 2 + bytes(7) + b"\x02"
    absent = PREFIX * 2 + bytes(7) + b"\x03"
    assert run_of(high, low).digests() == low + high
    merged = run_of(high).merged_with(rows_of(low))
    assert merged.digests() == low + high
    assert [merged.contains(d) for d in (low, high, absent)] == [True, True, False]


@settings(max_examples=200, database=None, deadline=None)
@given(
    first=st.sets(st.integers(0, 300)),
    second=st.sets(st.integers(0, 300)),
)
def test_a_set_of_keys_has_one_run_whatever_the_merges(first: set[int], second: set[int]) -> None:
    """Merging in any order, with repeats, gives the run built from the union at once, and
    the run holds exactly the union."""
    union = sorted(digest(n) for n in first | second)
    left = run_of(*map(digest, first)) if first else EMPTY_RUN
    merged = left.merged_with(sort_unique(rows_of(b"".join(map(digest, second)))))
    assert merged.digests() == b"".join(union)
    assert all(merged.contains(digest(n)) for n in first | second)
    assert not any(merged.contains(digest(n)) for n in range(301, 340))


def test_sort_unique_merges_sorted_stretches_and_drops_repeats() -> None:
    """Keys arriving as several sorted deltas, with a repeat, come out ascending and once."""
    stretches = [sorted(digest(n) for n in range(start, start + 50)) for start in (0, 30, 200)]
    rows = sort_unique(rows_of(b"".join(b"".join(s) for s in stretches)))
    expected = sorted({d for s in stretches for d in s})
    assert rows.astype(">u8").tobytes() == b"".join(expected)


def test_without_smallest_drops_the_lowest_digests() -> None:
    """The cap's cut: the run less its numerically smallest keys."""
    keys = sorted(digest(n) for n in range(10))
    assert run_of(*keys).without_smallest(3).digests() == b"".join(keys[3:])


def test_mask_names_every_slot_that_holds_a_prefix() -> None:
    """The mask may say "maybe" wrongly but never "certainly not" for a key a run holds,
    also after it is rebuilt at another size and after another slot is dropped."""
    runs = {slot: run_of(*(digest(slot * 1000 + n) for n in range(500))) for slot in (7, 8, 9)}
    mask = SlotMask()
    for slot, run in runs.items():
        mask.add(slot, run.rows())
    mask.drop(10)  # 10 & 7 == 2, shared with no live slot here
    for candidate in (mask, SlotMask.sized(1500, runs)):
        table = np.frombuffer(candidate.table, dtype=np.uint8)
        for slot, run in runs.items():
            heads = [prefix(run.digests(i, i + 1)) >> candidate.shift for i in range(len(run))]
            assert all(table[heads] & SlotMask.bit(slot))


def test_runs_large_enough_for_a_memory_map_answer_the_same() -> None:
    """A run past MAPPED_RUN_BYTES (kept in a memory map of its own) merges, trims and
    answers exactly as a small one."""
    count = MAPPED_RUN_BYTES // DIGEST_SIZE + 100
    keys = sorted(digest(n) for n in range(count + 10))
    run = run_of(*keys[:count])
    assert len(run.keys) >= MAPPED_RUN_BYTES
    merged = run.merged_with(rows_of(b"".join(keys[count:])))
    assert merged.digests() == b"".join(keys)
    trimmed = merged.without_smallest(5)
    assert trimmed.digests() == b"".join(keys[5:])
    assert [trimmed.contains(d) for d in (keys[4], keys[5], keys[-1])] == [False, True, True]


_tied_digests = st.lists(
    st.builds(
        bytes.__add__,
        st.sampled_from([PREFIX, PREFIX[::-1], bytes(4)]),  # many share their top 32 bits
        st.binary(min_size=12, max_size=12).map(lambda rest: rest[:2] * 6),
    ),
    max_size=60,
)


@settings(max_examples=300, database=None, deadline=None)
@given(digests=_tied_digests)
def test_sort_unique_orders_digests_that_share_their_leading_bits(digests: list[bytes]) -> None:
    """Digests equal in their first 4 or 8 bytes, repeated, in any order, come out ascending
    as unsigned numbers and each once."""
    rows = sort_unique(rows_of(b"".join(digests)))
    assert rows.astype(">u8").tobytes() == b"".join(sorted(set(digests)))
