"""The changelog record of a dedupe window: a versioned binary encoding that round-trips and
refuses anything else with a clear error."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.delta import FORMAT_VERSION, WindowDelta, decode, encode, encoded_size

INT64 = st.integers(-(1 << 63) + 1, (1 << 63) - 1)


@st.composite
def deltas(draw: st.DrawFn) -> WindowDelta:
    slot_ids = sorted(draw(st.sets(INT64, max_size=4)))
    slots = tuple(
        (
            slot_id,
            b"".join(
                sorted(draw(st.sets(st.binary(min_size=16, max_size=16), min_size=1, max_size=5)))
            ),
        )
        for slot_id in slot_ids
    )
    return WindowDelta(
        slot_ms=draw(st.integers(1, (1 << 63) - 1)),
        high_water_ms=draw(st.none() | INT64),
        slots=slots,
        replaces=draw(st.booleans()),
    )


@settings(max_examples=300, database=None, deadline=None)
@given(delta=deltas())
def test_encoding_round_trips(delta: WindowDelta) -> None:
    """Every delta decodes from its encoding to itself, in exactly encoded_size bytes."""
    data = encode(delta)
    assert decode(data) == delta
    assert len(data) == encoded_size(len(delta.slots), delta.keys)


def test_encoding_is_the_documented_layout() -> None:
    """A record written by hand from the layout in the module docstring decodes."""
    digest = bytes(range(16))
    data = (
        struct.pack(">BBqqI", 1, 1, 5_400_000, 1_764_000_000_000, 1)
        + struct.pack(">qI", 326_666, 1)
        + digest
    )
    assert decode(data) == WindowDelta(5_400_000, 1_764_000_000_000, ((326_666, digest),), True)


@settings(max_examples=100, database=None, deadline=None)
@given(delta=deltas(), data=st.data())
def test_a_truncated_record_is_refused(delta: WindowDelta, data: st.DataObject) -> None:
    """A record cut short anywhere is refused, never read as a smaller delta."""
    encoded = encode(delta)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ValueError, match="window delta"):
        decode(encoded[:cut])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: bytes([FORMAT_VERSION + 1]) + b[1:], "format version 2"),
        (lambda b: b[:1] + b"\x02" + b[2:], "unknown flags"),
        (lambda b: b + b"\x00", "after the last section"),
        (lambda b: b[:2] + struct.pack(">q", 0) + b[10:], "slot_ms=0"),
    ],
)
def test_a_record_this_reader_does_not_know_is_refused(
    change: Callable[[bytes], bytes], reason: str
) -> None:
    """A newer version, unknown flags, trailing bytes or a nonsense slot width: a clear error."""
    valid = encode(WindowDelta(1000, 5000, ((4, bytes(16)),)))
    with pytest.raises(ValueError, match=reason):
        decode(change(valid))


def test_sections_must_be_in_slot_order_and_not_empty() -> None:
    """Slot sections out of order, or claiming no keys, are refused."""
    header = struct.pack(">BBqqI", 1, 0, 1000, 5000, 2)
    section = struct.pack(">qI", 4, 1) + bytes(16)
    with pytest.raises(ValueError, match="out of order"):
        decode(header + section + section)
    with pytest.raises(ValueError, match="claims 0 keys"):
        decode(struct.pack(">BBqqI", 1, 0, 1000, 5000, 1) + struct.pack(">qI", 4, 0))


@settings(max_examples=300, database=None, deadline=None)
@given(data=st.binary(max_size=80))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    """Whatever a changelog record holds, decoding gives a delta or a ValueError, never
    another exception."""
    try:
        delta = decode(data)
    except ValueError:
        return
    assert encode(delta) == data
