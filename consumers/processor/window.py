"""Exact dedupe state for one partition of `postbacks.raw`: "was this notification emitted already?"

Contract (what the runtime may rely on)
---------------------------------------
- Keys are 16-byte identity digests. Each comes with an event time in epoch ms: the edge's
  received-at header, never the processor's clock. All time below is that event time, and
  `high water` is the largest event time passed to `seen_or_add` so far (aborted batches
  excluded).
- Event time is cut into slots of `window_ms / 4`, aligned to the epoch. A digest is remembered
  in the slot of the event time it was first seen with; a slot is live while its end is later
  than `high water - window_ms`. `seen_or_add` answers True exactly when the digest was first
  seen (by an earlier call that answered False) in a live slot. So a digest is remembered for at
  least `window_ms` and at most `window_ms + window_ms / 4` of event time, and a provider retry
  (at most ~30 min after its original, postback-formats §6) is caught whenever the window exceeds
  the retry span plus the disorder of event times in the partition. The constructor refuses a
  window not longer than `PROVIDER_RETRY_SPAN_MS`.
- Exact: every answer comes from comparing all 16 bytes of stored digests. No probabilistic
  filter: a false positive would drop a real notification.
- Out-of-order event times are fine: a key lands in the slot of its own time; lookups consult only
  live slots, so a key is never treated as forgotten early and never remembered past its slot
  because a younger key arrived first. A key whose own time is already outside the window is
  not remembered at all (it could never be found again).
- Deterministic: the answers depend only on the sequence of (digest, event time) calls and on
  which batches were committed, never on batch boundaries or wall-clock time. Restoring after
  an assignment from the raw topic is therefore: call `seen_or_add` for the re-read records in
  offset order, `commit()` after each fetched batch (pending keys are only filed and expired at
  commit), ignore the answers. The restored state equals the lost one when the restore starts
  `restore_span_ms` (plus a margin for disorder) before the received-at of the last committed
  record: a key's first sighting must be re-read, and a chain of retries never spans more than
  the retry span.
- Transactions: keys added since the last `commit()` are pending. A duplicate within the pending
  batch is detected. `abort()` forgets the pending keys and the high water they advanced, so the
  state is exactly as at the last commit; `commit()` makes them count. Call `commit()` only after
  the Kafka transaction that carried the batch's output committed.
- Changelog: `pending_delta()`, read before `commit()`, is what the batch adds (its new keys by
  slot, and the high water). Written in the batch's own Kafka transaction, the deltas of the
  committed batches rebuild the window: `apply_delta` on a fresh window, in commit order, is
  equivalent to processing and committing each batch, so the rebuilt window answers every later
  call exactly as the lost one would have, cap evictions included. `snapshot()` is the whole
  committed state as deltas (the first replaces the state it is applied to). Their bytes:
  `consumers.processor.delta`.
- Bounded: expired slots are dropped whole at `commit()` (O(1) per key amortised). `max_keys` is
  a safety valve on top: when more keys are held after a commit, keys of the oldest slot are
  dropped until the count fits, and each one still inside the window counts in `evicted_early`.
  That is the right direction to fail: a prematurely forgotten key can only let a duplicate
  through (and its event id repeats, so a downstream upsert absorbs it), while refusing new keys
  would drop real notifications or stall the partition. The keys dropped are the oldest slot's
  numerically smallest digests: arbitrary with respect to notifications, but a function of the
  state, so changelog deltas rebuild it exactly (a restore from the raw topic, with other batch
  boundaries, may still differ). Size the cap so it never fires and alert on the counter.

How the keys are held, and why
------------------------------
Per live slot, one `Run` (`consumers.processor.runs`): the slot's digests sorted and packed end
to end in one buffer, with a directory of offsets by their leading bits, about 17 bytes a key.
A `SlotMask` (a byte per bucket of digest prefixes, a bit per slot) says which runs may hold a
prefix, so most lookups of a new key read no run at all. Keys committed since the last merge
wait in a dict (digest -> slot id) until it holds a 64th of the window (at least
`buffer_keys`) or a slot expires, and are then merged into the runs in bulk; the pending batch
is a dict of its own, so that `abort()` only clears it. A lookup consults the pending dict,
the recent dict, then the runs the mask names, newest first: one `find` over a few neighbouring
keys, comparing whole digests. Why this shape:

- Python objects cannot be compact: a 16-byte `bytes` object alone costs 49 bytes (64 as
  allocated), a set entry 16-32 more. Packed, a key costs its 16 bytes, and a delta or a
  snapshot is those same bytes.
- Slots stay whole: expiry drops a slot's run and clears its mask bit (no per-key time, no
  deletions), as the set-per-slot window did. One run for all slots would need one lookup per
  key, but every merge would copy (and for a moment double) the whole state, and every expiry
  would compact it.
- A merge copies one slot's run; holding a 64th of the window between merges keeps that to a
  few copies per key, and the buffered keys' objects to a couple of bytes per key of the
  window. A merge allocates little besides the new run, so memory peaks near the steady state.
- CPython charges per operation, not per byte: a lookup is arranged to do few (a prefix as a
  small int, one mask byte, one `find` in C). It still costs about twice a set lookup per call;
  `seen_or_add_many` saves part of that for a whole batch.
- Sorted order makes the state canonical: the same keys give the same runs, the same cap
  evictions and the same snapshot bytes however they arrived. Rebuilding from a snapshot is a
  copy (its parts arrive sorted); from live deltas, one stable sort per slot of sorted stretches.
- numpy does the bulk work (sort, merge, mask). An embedded store (LMDB, RocksDB) was not
  chosen: its pages count in RSS once touched, each lookup crosses into it with more overhead
  than a `find`, and it brings native files to manage for a state the changelog rebuilds anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import chain
from typing import Final

import numpy as np

from consumers.processor.delta import WindowDelta, encoded_size
from consumers.processor.runs import (
    DIGEST_SIZE,
    EMPTY_RUN,
    PREFIX_BITS,
    Probe,
    Rows,
    Run,
    SlotMask,
    Staging,
    digests_of,
    holds,
    prefixes,
    rows_of,
    sort_unique,
)

__all__ = [
    "DEFAULT_BUFFER_KEYS",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_WINDOW_MS",
    "DIGEST_SIZE",
    "PROVIDER_RETRY_SPAN_MS",
    "SLOTS_PER_WINDOW",
    "DedupeWindow",
]

PROVIDER_RETRY_SPAN_MS: Final = 30 * 60 * 1000
"""Latest a provider retry arrives after its original: 5 retries about 5 minutes apart."""

DEFAULT_WINDOW_MS: Final = 6 * 60 * 60 * 1000
DEFAULT_MAX_KEYS: Final = 4_000_000
"""The cap's default (consumers.settings has its own); size it to the partition's traffic."""

SLOTS_PER_WINDOW: Final = 4
"""More slots forget keys closer to `window_ms` but cost one more run lookup per new key."""

DEFAULT_BUFFER_KEYS: Final = 4096
"""Fewest committed keys held in the recent dict before a merge into the runs.

Each buffered key is a Python object (about 90 bytes with its dict entry) against 16 bytes in a
run, and every partition holds its own buffer: a small window pays this floor on all of its
keys. A merge copies one slot's run, so fewer keys per merge cost more copying per key, which
only matters once the window's share (BUFFER_SHARE) is above the floor anyway."""

BUFFER_SHARE: Final = 64
"""The recent dict is merged once it holds more than the window's keys / BUFFER_SHARE."""

SNAPSHOT_PART_BYTES: Final = 1_000_000
"""Largest encoded snapshot part: Kafka's default max.message.bytes is 1 MiB."""

_NO_TIME: Final = -(1 << 63)
_NO_SLOT: Final = 1 << 63
_HEAD_SHIFT: Final = 8 * DIGEST_SIZE - PREFIX_BITS
_from_bytes: Final = int.from_bytes
_KEY_OBJECT_BYTES: Final = 64  # a 16-byte `bytes` object as pymalloc allocates it
_SLOT_ID_BYTES: Final = 32  # the int slot id held per buffered key


class DedupeWindow:
    """The dedupe state of one partition. Not thread-safe; one owner drives it."""

    __slots__ = (
        "_buffer_keys",
        "_committed_count",
        "_committed_high_water_ms",
        "_evicted_early",
        "_first_live_id",
        "_high_water_ms",
        "_live_runs",
        "_mask",
        "_mask_shift",
        "_mask_table",
        "_max_keys",
        "_next_horizon_ms",
        "_pending",
        "_probes",
        "_probes_by_flags",
        "_recent",
        "_recent_min_slot",
        "_runs",
        "_slot_ms",
        "_staged",
        "_window_ms",
    )

    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_keys: int = DEFAULT_MAX_KEYS,
        *,
        buffer_keys: int = DEFAULT_BUFFER_KEYS,
    ) -> None:
        if window_ms <= PROVIDER_RETRY_SPAN_MS:
            raise ValueError(
                f"window_ms={window_ms} must exceed the provider's retry span "
                f"({PROVIDER_RETRY_SPAN_MS} ms), or retries slip through as new notifications"
            )
        if max_keys < 1:
            raise ValueError(f"max_keys={max_keys} must be at least 1")
        if buffer_keys < 1:
            raise ValueError(f"buffer_keys={buffer_keys} must be at least 1")
        self._window_ms = window_ms
        self._slot_ms = -(-window_ms // SLOTS_PER_WINDOW)
        self._max_keys = max_keys
        self._buffer_keys = buffer_keys
        self._runs: dict[int, Run] = {}
        self._mask = SlotMask()
        self._mask_table, self._mask_shift = self._mask.table, self._mask.shift
        self._staged: dict[int, Staging] = {}  # applied deltas not merged into runs yet
        self._recent: dict[bytes, int] = {}  # committed, not merged yet: digest -> slot id
        self._recent_min_slot = _NO_SLOT  # no slot id in `_recent` is lower
        self._pending: dict[bytes, int] = {}  # this batch: digest -> slot id
        self._committed_count = 0
        self._high_water_ms = _NO_TIME
        self._committed_high_water_ms = _NO_TIME
        self._evicted_early = 0
        self._first_live_id = 0
        self._next_horizon_ms = _NO_TIME
        self._live_runs: tuple[tuple[int, Run], ...] = ()  # newest first
        self._probes: list[Probe] = []  # the live runs, as lookups read them
        self._probes_by_flags = SlotMask.by_flags(())  # the live runs a mask byte names
        self._recompute_live()

    def seen_or_add(self, digest: bytes, event_time_ms: int) -> bool:
        """True: this digest was already emitted inside the window (or earlier in this batch);
        drop the record. False: new; it is now pending until `commit()` or `abort()`."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
        if self._staged:
            self._settle()
        if event_time_ms > self._high_water_ms:
            self._high_water_ms = event_time_ms
            if event_time_ms >= self._next_horizon_ms:
                self._recompute_live()
        first_live_id = self._first_live_id
        slot_id = self._pending.get(digest)
        if slot_id is not None and slot_id >= first_live_id:
            return True
        slot_id = self._recent.get(digest)
        if slot_id is not None and slot_id >= first_live_id:
            return True
        if self._probes:
            head = _from_bytes(digest, "big") >> _HEAD_SHIFT  # runs.prefix, cheaper
            probes = self._probes_by_flags[self._mask_table[head >> self._mask_shift]]
            if probes and holds(probes, head, digest):
                return True
        slot_id = event_time_ms // self._slot_ms
        if slot_id >= first_live_id:
            self._pending[digest] = slot_id
        return False

    def seen_or_add_many(
        self, digests: Sequence[bytes], event_times_ms: Sequence[int]
    ) -> list[bool]:
        """`[seen_or_add(d, t) for d, t in zip(digests, event_times_ms)]`, cheaper per record:
        the digests' prefixes and mask bytes are read for the whole batch at once."""
        if len(digests) != len(event_times_ms):
            raise ValueError(f"{len(digests)} digests but {len(event_times_ms)} event times")
        if not digests:
            return []
        widths = set(map(len, digests))
        if widths != {DIGEST_SIZE}:
            wrong = min(widths - {DIGEST_SIZE})
            raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {wrong}")
        if self._staged:
            self._settle()
        heads_array = prefixes(rows_of(b"".join(digests)))
        mask = self._mask
        flags_of = np.frombuffer(mask.table, dtype=np.uint8)[heads_array >> mask.shift].tolist()
        heads = heads_array.tolist()
        pending, recent, slot_ms = self._pending, self._recent, self._slot_ms
        high_water_ms, first_live_id, by_flags = (
            self._high_water_ms,
            self._first_live_id,
            self._probes_by_flags,
        )
        answers: list[bool] = []
        answer = answers.append
        for digest, event_time_ms, head, flags in zip(
            digests, event_times_ms, heads, flags_of, strict=True
        ):
            if event_time_ms > high_water_ms:
                high_water_ms = self._high_water_ms = event_time_ms
                if event_time_ms >= self._next_horizon_ms:
                    self._recompute_live()  # the runs stay, so the mask bytes read stay true
                    first_live_id, by_flags = self._first_live_id, self._probes_by_flags
            slot_id = pending.get(digest)
            if slot_id is None or slot_id < first_live_id:
                slot_id = recent.get(digest)
            if (slot_id is not None and slot_id >= first_live_id) or (
                flags and holds(by_flags[flags], head, digest)
            ):
                answer(True)
                continue
            slot_id = event_time_ms // slot_ms
            if slot_id >= first_live_id:
                pending[digest] = slot_id
            answer(False)
        return answers

    def commit(self) -> None:
        """Make the pending keys count, then drop expired slots and enforce the cap."""
        pending = self._pending
        if pending:
            self._recent.update(pending)
            self._recent_min_slot = min(self._recent_min_slot, min(pending.values()))
            pending.clear()
        self._close_batch()

    def abort(self) -> None:
        """Forget everything since the last `commit()`, as if that batch was never read."""
        self._pending.clear()
        self._high_water_ms = self._committed_high_water_ms
        self._recompute_live()

    def pending_delta(self) -> WindowDelta:
        """What `commit()` would add now: the pending keys that stay, by slot, and the high
        water. Read it before `commit()` and write it in the batch's transaction. A delta with
        no keys still matters when its high water is past `high_water_ms` (expiry follows the
        high water); one with neither changes nothing and need not be written."""
        first_live_id = self._live_id_at(self._high_water_ms)
        by_slot: dict[int, list[bytes]] = {}
        for digest, slot_id in self._pending.items():
            if slot_id >= first_live_id:
                by_slot.setdefault(slot_id, []).append(digest)
        slots = tuple(
            (slot_id, digests_of(sort_unique(rows_of(b"".join(digests)))))
            for slot_id, digests in sorted(by_slot.items())
        )
        return WindowDelta(self._slot_ms, _time_or_none(self._high_water_ms), slots)

    def apply_delta(self, delta: WindowDelta) -> None:
        """Change the committed state as processing and committing that delta's batch did.

        Deltas must come in commit order (the high water never goes back) from a window with
        the same slot width, and the window must have no pending keys. On ValueError the
        window is unchanged. Cheap: keys are staged as arrays and merged at the next lookup.
        """
        if self._pending:
            raise ValueError("apply_delta on a window with pending keys: commit() or abort()")
        if delta.slot_ms != self._slot_ms:
            raise ValueError(
                f"window delta has {delta.slot_ms} ms slots, this window {self._slot_ms} ms: "
                "it was written with another dedupe window length"
            )
        high_water_ms = _NO_TIME if delta.high_water_ms is None else delta.high_water_ms
        if high_water_ms < self._committed_high_water_ms and not delta.replaces:
            raise ValueError(
                f"window delta's high water {high_water_ms} is before this window's "
                f"{self._committed_high_water_ms}: deltas must be applied in commit order"
            )
        newest_id = high_water_ms // self._slot_ms
        for slot_id, digests in delta.slots:
            if slot_id > newest_id:
                raise ValueError(f"window delta has slot {slot_id}, after its high water")
            if len(digests) % DIGEST_SIZE:
                raise ValueError(f"window delta's slot {slot_id} holds a partial digest")
        if delta.replaces:
            self._clear()
        self._high_water_ms = high_water_ms
        for slot_id, digests in delta.slots:  # slots already past the window go at the close
            if digests:
                self._staged.setdefault(slot_id, Staging()).append(digests)
        self._close_batch()

    def snapshot(self, max_bytes: int = SNAPSHOT_PART_BYTES) -> list[WindowDelta]:
        """The committed state as deltas of at most `max_bytes` encoded, in order; the first
        replaces the state it is applied to. Pending keys are not part of it."""
        smallest = encoded_size(1, 1)
        if max_bytes < smallest:
            raise ValueError(f"max_bytes={max_bytes} cannot hold one key ({smallest})")
        self._flush(self._live_id_at(self._committed_high_water_ms))
        self._settle()
        high_water_ms = _time_or_none(self._committed_high_water_ms)
        parts: list[WindowDelta] = []
        sections: list[tuple[int, bytes]] = []
        keys = 0
        for slot_id in sorted(self._runs):
            run = self._runs[slot_id]
            start = 0
            while start < len(run):
                room = (max_bytes - encoded_size(len(sections) + 1, keys)) // DIGEST_SIZE
                if room < 1:
                    parts.append(WindowDelta(self._slot_ms, high_water_ms, tuple(sections)))
                    sections, keys = [], 0
                    continue
                stop = min(len(run), start + room)
                sections.append((slot_id, run.digests(start, stop)))
                keys += stop - start
                start = stop
        if sections or not parts:
            parts.append(WindowDelta(self._slot_ms, high_water_ms, tuple(sections)))
        parts[0] = parts[0]._replace(replaces=True)
        return parts

    def __len__(self) -> int:
        """Keys held, pending ones included (some may already be past the window)."""
        return self._committed_count + len(self._pending)

    @property
    def evicted_early(self) -> int:
        """Keys dropped by the `max_keys` cap while still inside the window (monotonic)."""
        return self._evicted_early

    @property
    def restore_span_ms(self) -> int:
        """How much received-at before the committed position a restore must re-read."""
        return self._window_ms + self._slot_ms + PROVIDER_RETRY_SPAN_MS

    @property
    def high_water_ms(self) -> int | None:
        """Largest committed event time, None before the first commit."""
        return _time_or_none(self._committed_high_water_ms)

    def approx_bytes(self) -> int:
        """Approximate heap bytes held: runs, mask, staged arrays and the two dicts."""
        arrays = sum(run.nbytes for run in self._runs.values()) + self._mask.nbytes
        arrays += sum(map(len, self._staged.values())) * DIGEST_SIZE
        buffered = len(self._recent) + len(self._pending)
        dicts = sys.getsizeof(self._recent) + sys.getsizeof(self._pending)
        per_key = (_KEY_OBJECT_BYTES + _SLOT_ID_BYTES) * buffered
        return sys.getsizeof(self) + arrays + dicts + per_key

    def _close_batch(self) -> None:
        """After a batch's keys are filed: expire, merge the buffer if due, enforce the cap."""
        first_live_id = self._live_id_at(self._high_water_ms)
        for slot_id in [slot_id for slot_id in self._runs if slot_id < first_live_id]:
            del self._runs[slot_id]
            self._mask.drop(slot_id)
        for slot_id in [slot_id for slot_id in self._staged if slot_id < first_live_id]:
            self._unstage(slot_id)
        buffer_limit = max(self._buffer_keys, self._committed_count // BUFFER_SHARE)
        if self._recent_min_slot < first_live_id or len(self._recent) > buffer_limit:
            self._flush(first_live_id)
        self._committed_count = self._count()
        if self._committed_count > self._max_keys:
            self._evict_over_cap(first_live_id)
        self._committed_high_water_ms = self._high_water_ms
        self._recompute_live()

    def _flush(self, first_live_id: int) -> None:
        """Merge the recent dict into the runs, leaving out keys of slots before the first live."""
        recent = self._recent
        if not recent:
            return
        rows = rows_of(b"".join(recent))
        slot_ids = np.fromiter(recent.values(), dtype=np.int64, count=len(recent))
        recent.clear()
        self._recent_min_slot = _NO_SLOT
        for slot_id in np.unique(slot_ids).tolist():
            if slot_id >= first_live_id:
                self._merge(slot_id, rows[slot_ids == slot_id])

    def _settle(self) -> None:
        """Merge staged deltas into the runs; the next lookup needs them."""
        for slot_id in sorted(self._staged):
            self._merge(slot_id, self._unstage(slot_id))
        self._recompute_live()

    def _unstage(self, slot_id: int) -> Rows:
        return self._staged.pop(slot_id).rows()

    def _merge(self, slot_id: int, rows: Rows) -> None:
        rows = sort_unique(rows)
        self._runs[slot_id] = self._runs.get(slot_id, EMPTY_RUN).merged_with(rows)
        self._mask.add(slot_id, rows)

    def _count(self) -> int:
        runs = sum(len(run) for run in self._runs.values())
        return runs + sum(map(len, self._staged.values())) + len(self._recent)

    def _evict_over_cap(self, first_live_id: int) -> None:
        """Drop the oldest slot's smallest digests until the count fits."""
        while self._committed_count > self._max_keys:
            oldest = min(chain(self._runs, self._staged), default=_NO_SLOT)
            if self._recent and self._recent_min_slot <= oldest:
                self._flush(first_live_id)  # the oldest slot may have keys in the dict
                self._committed_count = self._count()
                continue
            if oldest in self._staged:
                self._merge(oldest, self._unstage(oldest))
            run = self._runs[oldest]
            excess = self._committed_count - self._max_keys
            if len(run) <= excess:
                removed = len(run)
                del self._runs[oldest]
                self._mask.drop(oldest)
            else:
                removed = excess
                self._runs[oldest] = run.without_smallest(excess)
            self._committed_count -= removed
            self._evicted_early += removed  # only live slots are left at this point

    def _clear(self) -> None:
        self._runs.clear()
        self._mask = SlotMask()
        self._mask_table, self._mask_shift = self._mask.table, self._mask.shift
        self._staged.clear()
        self._recent.clear()
        self._recent_min_slot = _NO_SLOT
        self._committed_count = 0
        self._high_water_ms = self._committed_high_water_ms = _NO_TIME

    def _live_id_at(self, high_water_ms: int) -> int:
        return (high_water_ms - self._window_ms) // self._slot_ms

    def _recompute_live(self) -> None:
        """Refresh the live runs, the mask's size, and the high water at which they next
        change."""
        held = sum(len(run) for run in self._runs.values())
        if not self._mask.fits(held):
            self._mask = SlotMask.sized(held, self._runs)
        self._mask_table, self._mask_shift = self._mask.table, self._mask.shift
        first_live_id = self._live_id_at(self._high_water_ms)
        self._first_live_id = first_live_id
        self._next_horizon_ms = (first_live_id + 1) * self._slot_ms + self._window_ms
        live_runs = tuple(
            (slot_id, self._runs[slot_id])
            for slot_id in sorted(self._runs, reverse=True)  # newest first: retries are recent
            if slot_id >= first_live_id
        )
        if live_runs != self._live_runs:  # most commits change no run
            self._live_runs = live_runs
            live = [(slot_id, run.probe()) for slot_id, run in live_runs]
            self._probes = [probe for _, probe in live]
            self._probes_by_flags = SlotMask.by_flags(live)


def _time_or_none(time_ms: int) -> int | None:
    return None if time_ms == _NO_TIME else time_ms
