"""A state change as changelog records: it round-trips, and cut in parts it stays the same change.

The runtime writes each transaction's `StateDelta` to the state topic in parts of bounded size
(`in_parts`); a rebuild applies them in order. The parts together must hold exactly the keys
and operations of the whole, each part must fit a Kafka record, and a change small enough to
fit one record must be written as one.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.delta import WindowDelta
from consumers.processor.latency import TAKE_FINAL, TAKE_SENT, WAIT_FINAL, WAIT_SENT, LatencyDelta
from consumers.processor.state import FORMAT_VERSION, StateDelta, in_parts

SLOT_MS = 5_400_000
digests = st.binary(min_size=16, max_size=16)


@st.composite
def state_deltas(draw: st.DrawFn) -> StateDelta:
    slot_ids = sorted(draw(st.sets(st.integers(0, 1000), max_size=3)))
    slots = tuple(
        (slot_id, b"".join(sorted(draw(st.sets(digests, min_size=1, max_size=40)))))
        for slot_id in slot_ids
    )
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from((WAIT_SENT, WAIT_FINAL, TAKE_SENT, TAKE_FINAL)),
                st.integers(0, 1000),
                st.text(max_size=30),
                st.integers(0, 1 << 50),
            ).map(lambda op: op if op[0] <= WAIT_FINAL else (*op[:3], 0)),
            max_size=40,
        )
    )
    replaces = draw(st.booleans())
    high_water = draw(st.none() | st.integers(0, 1 << 50))
    return StateDelta(
        WindowDelta(SLOT_MS, high_water, slots, replaces),
        LatencyDelta(high_water, tuple(ops), replaces),
    )


@settings(max_examples=200, database=None, deadline=None)
@given(delta=state_deltas())
def test_a_state_change_round_trips(delta: StateDelta) -> None:
    """What a transaction writes to the state topic is what a rebuild reads back."""
    assert StateDelta.decode(delta.encode()) == delta


@settings(max_examples=300, database=None, deadline=None)
@given(delta=state_deltas(), max_bytes=st.integers(64, 2048))
def test_parts_hold_exactly_the_whole_change_each_within_the_limit(
    delta: StateDelta, max_bytes: int
) -> None:
    """Cut in parts, a change keeps every key in its slot and every operation in order, only
    the first part replaces the state, and no part is much larger than the limit."""
    parts = in_parts(delta, max_bytes)
    keys: dict[int, bytes] = {}
    for part in parts:
        for slot_id, part_keys in part.window.slots:
            keys[slot_id] = keys.get(slot_id, b"") + part_keys
    assert keys == dict(delta.window.slots)
    assert tuple(op for part in parts for op in part.latency.ops) == delta.latency.ops
    assert [part.replaces for part in parts] == [delta.replaces] + [False] * (len(parts) - 1)
    largest_op = max((len(op[2].encode()) for op in delta.latency.ops), default=0) + 19
    for part in parts:
        assert part.window.high_water_ms == delta.window.high_water_ms
        assert len(part.encode()) <= max_bytes + largest_op + 64  # headers and one operation


def test_a_change_that_fits_one_record_is_written_whole() -> None:
    """A transaction's usual change is one state record, byte for byte the change itself."""
    delta = StateDelta(
        WindowDelta(SLOT_MS, 10, ((1, b"k" * 16 * 100),)),
        LatencyDelta(10, tuple((WAIT_SENT, 1, f"TRK{n:09d}", n) for n in range(100))),
    )
    (part,) = in_parts(delta)
    assert part.encode() == delta.encode()


def test_a_change_too_large_for_one_record_is_cut() -> None:
    """Keys or operations past half the limit each go to further parts."""
    many_keys = StateDelta(
        WindowDelta(SLOT_MS, 10, ((1, bytes(range(16)) * 64),)), LatencyDelta(10, ())
    )
    assert len(in_parts(many_keys, max_bytes=512)) == 4
    many_ops = StateDelta(
        WindowDelta(SLOT_MS, 10, ()),
        LatencyDelta(10, tuple((TAKE_SENT, 1, "é" * 20, 0) for _ in range(10))),
    )
    parts = in_parts(many_ops, max_bytes=512)
    assert len(parts) > 1
    assert all(len(part.encode()) <= 512 for part in parts)
    assert [op for part in parts for op in part.latency.ops] == list(many_ops.latency.ops)


@pytest.mark.parametrize("version", [0, FORMAT_VERSION + 1])
def test_a_state_record_of_another_format_is_refused(version: int) -> None:
    """A rebuild refuses a record it cannot read (and falls back to the raw topic)."""
    record = (
        bytes([version])
        + StateDelta(WindowDelta(SLOT_MS, None, ()), LatencyDelta(None, ())).encode()[1:]
    )
    with pytest.raises(ValueError, match="format version"):
        StateDelta.decode(record)
