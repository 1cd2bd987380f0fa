"""Delivery latency for one partition: join each message's "sent" and "final" notifications.

Contract (what the runtime may rely on)
---------------------------------------
- The runtime says which leg a notification is: `observe_sent` for the "sent" code of a message
  (N101 MMS, N201 SMS, ...), `observe_final` for a final outcome (delivered, expired, failed,
  rejected, ...). The code table lives with the parser, not here. Call it only for records the
  dedupe window let through, in offset order.
- Each call takes two times in epoch ms: `occurred_ms`, what latency is measured on (the
  provider's timestamp, or the edge's received-at when the provider sent none), and
  `received_ms`, the edge's received-at, which alone drives expiry. Expiry therefore follows the
  same clock as the dedupe window, and a provider timestamp that is off by hours (a v1 local
  offset read as UTC, say) skews one latency, not the whole state.
- Latency is `final occurred_ms - sent occurred_ms`, reported once per tracking id, for the first
  final that meets a waiting sent or the first sent that meets a waiting final. It is not clamped:
  a negative value means the two timestamps disagree, which is worth seeing.
- Where the latency goes. Events are emitted as records arrive and an emitted event cannot be
  edited, so the latency is returned for the notification being processed *now*:
  - sent, then final (the usual order): `observe_final` returns `Latency(x, final_first=False)`;
    put it on the final's event.
  - final, then sent (the sent was retried and overtaken, postback-formats §6): `observe_final`
    returns None and the final waits; the late `observe_sent` returns
    `Latency(x, final_first=True)`; put it on the late sent's event, flagged, so a reader that
    wants one latency per message takes it from whichever event carries it.
  A second sent while one waits, or a second final while one waits, is ignored (the first one
  counts). A final for a message already paired starts a new wait and expires unmatched.
- Bounded: entries wait between `max_age_ms` and 1.25x that of received-at (slots of
  `max_age_ms / 4`, as in the dedupe window). Expired entries are normal, since not
  every carrier sends receipts; they are counted as `expired_sent` (sent, no final: "no receipt")
  and `expired_final` (final whose sent never came or came too late, e.g. E101 with no N101).
  `max_entries` is a safety valve: over it, the oldest slot's entries go first, counted in
  `evicted_early`, and the worst outcome is a missing latency annotation.
- Transactions, like the dedupe window: the latency ends up *inside* emitted events, so a batch
  whose Kafka transaction aborts must not have consumed the waiting sent it matched, or the
  retried batch would emit the final without its latency. Changes since the last `commit()` are
  kept in an undo log (one tuple per change); `abort()` reverts them, `commit()` keeps them and
  is the only place entries expire, so counters never count an aborted batch. Restore after an
  assignment like the window: re-read `restore_span_ms` before the committed position (the larger
  of the two spans serves both), `commit()` after each fetched batch.
- Memory: ~144 bytes per waiting entry with a 20-character tracking id (tracemalloc, see
  `bench/state_bench.py`): the id string, its time, and a dict slot.
- Deterministic apart from cap evictions: answers depend on the call sequence and committed
  batches only. Per partition is enough: the tracking id is the Kafka key, so both legs of a
  message land in one partition.
- Changelog: `pending_delta()` (before `commit()`) is what the batch changed, as operations
  (an entry starts waiting in a slot, a waiting entry is taken by its other leg) plus the high
  water; `apply_delta()` then `commit()` on another join makes the same change, so applying a
  partition's deltas in order rebuilds the join without re-reading a record. `snapshot()` is
  the whole state as one delta that `replaces` whatever it is applied to.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from itertools import accumulate, islice
from typing import Final, NamedTuple

DEFAULT_MAX_AGE_MS: Final = 6 * 60 * 60 * 1000
DEFAULT_MAX_ENTRIES: Final = 1_000_000
SLOTS_PER_MAX_AGE: Final = 4

_NO_TIME: Final = -(1 << 63)
_ENTRY_OBJECT_BYTES: Final = 112  # a 16-31 character tracking id str (80) and an int (32)


class Latency(NamedTuple):
    """Delivery latency to put on the event of the notification just observed."""

    latency_ms: int
    final_first: bool
    """True: the final came before its sent; the latency rides on the late sent's event."""


# Changelog operations: an entry starts waiting (with its occurred_ms), or is taken.
WAIT_SENT: Final = 0
WAIT_FINAL: Final = 1
TAKE_SENT: Final = 2
TAKE_FINAL: Final = 3
_TAKE_OF_WAIT: Final = TAKE_SENT - WAIT_SENT  # = TAKE_FINAL - WAIT_FINAL
DELTA_FORMAT: Final = 2
# Columns, so that a rebuild decodes a delta's operations in a few C calls, not one at a time:
#   header (big-endian): version, flags, high water, number of operations n
#   n bytes: the operations;  n int64 (little-endian): slot ids;  n int64: occurred_ms (0 for a
#   take);  n uint16: the tracking ids' lengths in bytes;  the tracking ids, UTF-8, one after
#   the other.
_DELTA_HEADER: Final = struct.Struct(">BBqI")
_REPLACES: Final = 0x01
_MAX_ID_BYTES: Final = 0xFFFF

Op = tuple[int, int, str, int]  # operation, slot id, tracking id, occurred_ms (0 for a take)


def op_bytes(op: Op) -> int:
    """The encoded size of one operation."""
    return 1 + 8 + 8 + 2 + len(op[2].encode())


def _column(typecode: str, values: Iterable[int]) -> bytes:
    column = array(typecode, values)
    if sys.byteorder != "little":
        column.byteswap()
    return column.tobytes()


def _read_column(typecode: str, data: memoryview) -> array[int]:
    column = array(typecode)
    column.frombytes(data)
    if sys.byteorder != "little":
        column.byteswap()
    return column


class LatencyDelta(NamedTuple):
    """What one committed batch changed in a latency join (see the module docstring)."""

    high_water_ms: int | None
    ops: tuple[Op, ...]
    replaces: bool = False

    def encode(self) -> bytes:
        high_water = _NO_TIME if self.high_water_ms is None else self.high_water_ms
        ops = self.ops
        names = [op[2].encode() for op in ops]
        if any(len(name) > _MAX_ID_BYTES for name in names):
            raise ValueError("a tracking id longer than 65535 bytes")
        return b"".join(
            (
                _DELTA_HEADER.pack(DELTA_FORMAT, _REPLACES * self.replaces, high_water, len(ops)),
                bytes(op[0] for op in ops),
                _column("q", (op[1] for op in ops)),
                _column("q", (op[3] for op in ops)),
                _column("H", (len(name) for name in names)),
                *names,
            )
        )

    @classmethod
    def decode(cls, data: bytes | memoryview) -> LatencyDelta:
        """The delta in `data`; ValueError for anything but a whole delta of a known format."""
        view = memoryview(data)
        if len(view) < _DELTA_HEADER.size:
            raise ValueError("a truncated latency delta: shorter than its header")
        version, flags, high_water, count = _DELTA_HEADER.unpack_from(view)
        if version != DELTA_FORMAT:
            raise ValueError(f"latency delta format {version} is not {DELTA_FORMAT}")
        at = _DELTA_HEADER.size
        fixed = count * (1 + 8 + 8 + 2)
        if len(view) < at + fixed:
            raise ValueError("a truncated latency delta: its columns are cut short")
        codes = bytes(view[at : at + count])
        if codes and max(codes) > TAKE_FINAL:
            raise ValueError(f"unknown latency operation {max(codes)}")
        at += count
        slots = _read_column("q", view[at : at + 8 * count])
        at += 8 * count
        times = _read_column("q", view[at : at + 8 * count])
        at += 8 * count
        lengths = _read_column("H", view[at : at + 2 * count])
        at += 2 * count
        blob = bytes(view[at:])
        if len(blob) != sum(lengths):
            raise ValueError(
                f"a truncated latency delta: {len(blob)} bytes of tracking ids, "
                f"{sum(lengths)} announced"
            )
        ends = list(accumulate(lengths))
        names = [
            blob[end - length : end].decode() for end, length in zip(ends, lengths, strict=True)
        ]
        ops = tuple(zip(codes, slots, names, times, strict=True))
        return cls(None if high_water == _NO_TIME else high_water, ops, bool(flags & _REPLACES))


class _Slot:
    """Entries waiting since a received-at inside one slot: tracking id -> occurred_ms."""

    __slots__ = ("final", "id", "sent")

    def __init__(self, slot_id: int) -> None:
        self.id = slot_id
        self.sent: dict[str, int] = {}
        self.final: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.sent) + len(self.final)


class LatencyJoin:
    """The latency join state of one partition. Not thread-safe; one owner drives it."""

    __slots__ = (
        "_committed_high_water_ms",
        "_evicted_early",
        "_expired_final",
        "_expired_sent",
        "_high_water_ms",
        "_live_from_ms",
        "_live_slots",
        "_max_age_ms",
        "_max_entries",
        "_next_horizon_ms",
        "_redo",
        "_slot_ms",
        "_slots",
        "_undo",
    )

    def __init__(
        self, max_age_ms: int = DEFAULT_MAX_AGE_MS, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if max_age_ms < 1:
            raise ValueError(f"max_age_ms={max_age_ms} must be at least 1")
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries} must be at least 1")
        self._max_age_ms = max_age_ms
        self._slot_ms = -(-max_age_ms // SLOTS_PER_MAX_AGE)
        self._max_entries = max_entries
        self._slots: dict[int, _Slot] = {}
        self._undo: list[tuple[dict[str, int], str, int | None]] = []
        self._redo: list[Op] = []  # the batch's changes, for the changelog
        self._high_water_ms = _NO_TIME
        self._committed_high_water_ms = _NO_TIME
        self._expired_sent = 0
        self._expired_final = 0
        self._evicted_early = 0
        self._live_from_ms = _NO_TIME
        self._next_horizon_ms = _NO_TIME
        self._live_slots: list[_Slot] = []
        self._recompute_live()

    def observe_sent(self, tracking_id: str, occurred_ms: int, received_ms: int) -> Latency | None:
        """A "sent" notification. Not None only when its final came first: then put the
        returned latency (flagged `final_first`) on this sent's event."""
        self._advance(received_ms)
        for slot in self._live_slots:
            final_ms = slot.final.pop(tracking_id, None)
            if final_ms is not None:
                self._undo.append((slot.final, tracking_id, final_ms))
                self._redo.append((TAKE_FINAL, slot.id, tracking_id, 0))
                return Latency(final_ms - occurred_ms, final_first=True)
            if tracking_id in slot.sent:
                return None
        slot = self._slot_for(received_ms)
        self._wait(slot.sent, tracking_id, occurred_ms)
        self._redo.append((WAIT_SENT, slot.id, tracking_id, occurred_ms))
        return None

    def observe_final(self, tracking_id: str, occurred_ms: int, received_ms: int) -> Latency | None:
        """A final outcome. Not None when its sent was waiting: put the latency on this event."""
        self._advance(received_ms)
        for slot in self._live_slots:
            sent_ms = slot.sent.pop(tracking_id, None)
            if sent_ms is not None:
                self._undo.append((slot.sent, tracking_id, sent_ms))
                self._redo.append((TAKE_SENT, slot.id, tracking_id, 0))
                return Latency(occurred_ms - sent_ms, final_first=False)
            if tracking_id in slot.final:
                return None
        slot = self._slot_for(received_ms)
        self._wait(slot.final, tracking_id, occurred_ms)
        self._redo.append((WAIT_FINAL, slot.id, tracking_id, occurred_ms))
        return None

    def commit(self) -> None:
        """Keep the batch's changes, then expire old slots and enforce the cap."""
        self._undo.clear()
        self._redo.clear()
        first_live_id = self._live_from_ms // self._slot_ms
        for slot_id in [slot_id for slot_id in self._slots if slot_id < first_live_id]:
            slot = self._slots.pop(slot_id)
            self._expired_sent += len(slot.sent)
            self._expired_final += len(slot.final)
        held = len(self)
        while held > self._max_entries:
            held -= self._evict_oldest(held - self._max_entries)
        self._committed_high_water_ms = self._high_water_ms
        self._recompute_live()

    def abort(self) -> None:
        """Revert everything since the last `commit()`."""
        for waiting, tracking_id, occurred_ms in reversed(self._undo):
            if occurred_ms is None:
                del waiting[tracking_id]
            else:
                waiting[tracking_id] = occurred_ms
        self._undo.clear()
        self._redo.clear()
        self._high_water_ms = self._committed_high_water_ms
        self._recompute_live()

    def pending_delta(self) -> LatencyDelta:
        """What the batch since the last `commit()` changed; take it before `commit()`.

        The net change: an entry that started waiting and was taken in the same batch (both
        legs of a message in one batch, the usual case when they arrive close together) is
        left out, its two operations with it, since together they change nothing (`_net`).
        A rebuild then neither decodes nor applies them: most of its work at high volume.
        """
        return LatencyDelta(_time_or_none(self._high_water_ms), _net(self._redo))

    def apply_delta(self, delta: LatencyDelta) -> None:
        """Make the change `delta` describes, as pending; `commit()` makes it count."""
        if delta.replaces:
            self._slots.clear()
            self._high_water_ms = _NO_TIME
        slots = self._slots
        current: int | None = None
        sent: dict[str, int] = {}
        final: dict[str, int] = {}
        for op, slot_id, tracking_id, occurred_ms in delta.ops:
            if slot_id != current:  # a batch's operations mostly fall in one or two slots
                slot = slots.get(slot_id)
                if slot is None:
                    slot = slots[slot_id] = _Slot(slot_id)
                current, sent, final = slot_id, slot.sent, slot.final
            if op == WAIT_SENT:
                sent[tracking_id] = occurred_ms
            elif op == WAIT_FINAL:
                final[tracking_id] = occurred_ms
            elif op == TAKE_SENT:
                sent.pop(tracking_id, None)
            else:
                final.pop(tracking_id, None)
        if delta.high_water_ms is not None and delta.high_water_ms > self._high_water_ms:
            self._high_water_ms = delta.high_water_ms
        self._recompute_live()

    def snapshot(self) -> LatencyDelta:
        """The state as one delta that replaces whatever it is applied to; call it right after
        a `commit()` (pending changes would be in it too)."""
        ops: list[Op] = []
        for slot_id in sorted(self._slots):
            slot = self._slots[slot_id]
            ops.extend((WAIT_SENT, slot_id, tid, ms) for tid, ms in slot.sent.items())
            ops.extend((WAIT_FINAL, slot_id, tid, ms) for tid, ms in slot.final.items())
        return LatencyDelta(_time_or_none(self._committed_high_water_ms), tuple(ops), True)

    def __len__(self) -> int:
        """Entries waiting for their other leg (some may already be past `max_age_ms`)."""
        return sum(len(slot) for slot in self._slots.values())

    @property
    def restore_span_ms(self) -> int:
        """How much received-at before the committed position a restore must re-read."""
        return self._max_age_ms + self._slot_ms

    @property
    def expired_sent(self) -> int:
        """Sent notifications that waited `max_age_ms` without a final (monotonic)."""
        return self._expired_sent

    @property
    def expired_final(self) -> int:
        """Final notifications that waited `max_age_ms` without a sent (monotonic)."""
        return self._expired_final

    @property
    def evicted_early(self) -> int:
        """Entries dropped by the `max_entries` cap before their time (monotonic)."""
        return self._evicted_early

    def approx_bytes(self) -> int:
        """Approximate heap bytes held: map tables and the tracking-id and time objects."""
        tables = sum(
            sys.getsizeof(slot) + sys.getsizeof(slot.sent) + sys.getsizeof(slot.final)
            for slot in self._slots.values()
        )
        return sys.getsizeof(self) + tables + _ENTRY_OBJECT_BYTES * len(self)

    def _advance(self, received_ms: int) -> None:
        if received_ms > self._high_water_ms:
            self._high_water_ms = received_ms
            if received_ms >= self._next_horizon_ms:
                self._recompute_live()

    def _slot_for(self, received_ms: int) -> _Slot:
        slot_id = received_ms // self._slot_ms
        slot = self._slots.get(slot_id)
        if slot is None:
            slot = self._slots[slot_id] = _Slot(slot_id)
            self._recompute_live()
        return slot

    def _wait(self, waiting: dict[str, int], tracking_id: str, occurred_ms: int) -> None:
        # The id may sit in an expired slot that commit has not dropped yet: keep its value.
        self._undo.append((waiting, tracking_id, waiting.get(tracking_id)))
        waiting[tracking_id] = occurred_ms

    def _evict_oldest(self, excess: int) -> int:
        oldest_id = min(self._slots)
        oldest = self._slots[oldest_id]
        victims: list[tuple[dict[str, int], str]] = []
        for waiting in (oldest.sent, oldest.final):
            # Oldest first (dicts keep insertion order), collected in one pass: deleting from
            # the front one key at a time rescans the holes it leaves, quadratic in `excess`.
            victims.extend((waiting, tracking_id) for tracking_id in islice(waiting, excess))
        del victims[excess:]
        for waiting, tracking_id in victims:
            del waiting[tracking_id]
        if not oldest:
            del self._slots[oldest_id]
        self._evicted_early += len(victims)
        return len(victims)

    def _recompute_live(self) -> None:
        """Refresh the live slot list and the high water at which it next changes."""
        first_live_id = (self._high_water_ms - self._max_age_ms) // self._slot_ms
        self._live_from_ms = first_live_id * self._slot_ms
        self._next_horizon_ms = self._live_from_ms + self._slot_ms + self._max_age_ms
        self._live_slots = [
            self._slots[slot_id]
            for slot_id in sorted(self._slots, reverse=True)
            if slot_id >= first_live_id
        ]


def _net(ops: list[Op]) -> tuple[Op, ...]:
    """`ops` without each wait that a later take in `ops` undoes, nor that take.

    Exact: a wait puts an entry into a slot where it was not waiting (`observe_sent` and
    `observe_final` return early when it is), and only a live slot can be taken from, so a
    take of the same entry in the same slot restores what was there before the wait. A
    slot the pair alone created stays empty in the original; holding nothing, it answers
    nothing and expires counting nothing, so a join rebuilt without it answers the same.
    """
    waiting: dict[tuple[int, int, str], int] = {}  # (wait operation, slot, id) -> index
    undone: set[int] = set()
    for index, (op, slot_id, tracking_id, _) in enumerate(ops):
        if op in (WAIT_SENT, WAIT_FINAL):
            waiting[op, slot_id, tracking_id] = index
        else:
            waited = waiting.pop((op - _TAKE_OF_WAIT, slot_id, tracking_id), None)
            if waited is not None:
                undone.update((waited, index))
    if not undone:
        return tuple(ops)
    return tuple(op for index, op in enumerate(ops) if index not in undone)


def _time_or_none(time_ms: int) -> int | None:
    return None if time_ms == _NO_TIME else time_ms
