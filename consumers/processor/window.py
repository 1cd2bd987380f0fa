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
- Exact: a set lookup, no probabilistic filter. A false positive would drop a real notification.
- Out-of-order event times are fine: a key lands in the slot of its own time; lookups consult only
  live slots, so a key is never treated as forgotten early and never remembered past its slot
  because a younger key arrived first. A key whose own time is already outside the window is
  not remembered at all (it could never be found again).
- Deterministic: the answers depend only on the sequence of (digest, event time) calls and on
  which batches were committed, never on batch boundaries or wall-clock time. Rebuilding after an
  assignment is therefore: call `seen_or_add` for the re-read records in offset order, `commit()`
  after each fetched batch (pending keys are only filed and expired at commit), ignore the
  answers. The rebuilt state equals the lost one when the replay starts `replay_span_ms` (plus a
  margin for disorder) before the received-at of the last committed record: a key's first
  sighting must be replayed, and a chain of retries never spans more than the retry span.
- Transactions: keys added since the last `commit()` are pending. A duplicate within the pending
  batch is detected. `abort()` forgets the pending keys and the high water they advanced, so the
  state is exactly as at the last commit; `commit()` makes them count. Call `commit()` only after
  the Kafka transaction that carried the batch's output committed.
- Bounded: expired slots are dropped whole at `commit()` (O(1) per key amortised). `max_keys` is
  a safety valve on top: when more keys are held after a commit, keys of the oldest slot are
  dropped until the count fits, and each one still inside the window counts in `evicted_early`.
  That is the right direction to fail: a prematurely forgotten key can only let a duplicate
  through (and its event id repeats, so a downstream upsert absorbs it), while refusing new keys
  would drop real notifications or stall the partition. Which keys of the oldest slot go is
  arbitrary, so after a cap eviction a replay may differ from the live run; size the cap so it
  never fires and alert on the counter.

Memory and speed (`python bench/state_bench.py`, CPython 3.11, 1,000,000 random 16-byte keys)
---------------------------------------------------------------------------------------------
- tracemalloc: 78 bytes per key, 49 of them the key's own `bytes` object (requested size;
  pymalloc hands out 64). Process RSS: ~100 bytes per key after filling one window, ~118 per
  in-window key in steady state (three windows of churn; the extra is the up to 1/4 window of
  expired keys a slot holds until it is dropped, and set tables between resizes).
  `approx_bytes()` counts tables by `sys.getsizeof` plus 64 per key: ~93-110 per key.
- Measured alternatives (RSS per key, key objects included): dict digest->int ms plus a deque of
  digests for expiry order 163 after a fill; the same with times as shared int seconds 115 after
  a fill but 157 under steady churn (deletions leave holes and the dict re-sizes to three times
  its live count); OrderedDict 172; keys as 128-bit ints 99 but a conversion on every call.
  Per-slot sets win because expiry drops whole sets, so they never churn, and no per-key time is
  stored: the slot is the time.
- `seen_or_add`: 0.55-0.75 M new keys/s and 0.85-1.3 M duplicates/s on one core of a shared
  2-core machine; a rebuild (replay + commit every 10,000) takes 1.4-2.3 s per million keys.
"""

from __future__ import annotations

import sys
from typing import Final

DIGEST_SIZE: Final = 16
"""Width of an identity digest (consumers.processor.identity.DIGEST_SIZE)."""

PROVIDER_RETRY_SPAN_MS: Final = 30 * 60 * 1000
"""Latest a provider retry arrives after its original: 5 retries about 5 minutes apart."""

DEFAULT_WINDOW_MS: Final = 6 * 60 * 60 * 1000
DEFAULT_MAX_KEYS: Final = 2_000_000
"""About 240 MB per partition at the cap (see the memory figures above)."""

SLOTS_PER_WINDOW: Final = 4
"""More slots forget keys closer to `window_ms` but cost one more set lookup per new key."""

_NO_TIME: Final = -(1 << 63)
_KEY_OBJECT_BYTES: Final = 64  # a 16-byte `bytes` object as pymalloc allocates it
_PENDING_TIME_BYTES: Final = 32  # the int event time held per pending key


class DedupeWindow:
    """The dedupe state of one partition. Not thread-safe; one owner drives it."""

    __slots__ = (
        "_committed_count",
        "_committed_high_water_ms",
        "_evicted_early",
        "_high_water_ms",
        "_live_from_ms",
        "_live_sets",
        "_max_keys",
        "_next_horizon_ms",
        "_pending",
        "_slot_ms",
        "_slots",
        "_window_ms",
    )

    def __init__(
        self, window_ms: int = DEFAULT_WINDOW_MS, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if window_ms <= PROVIDER_RETRY_SPAN_MS:
            raise ValueError(
                f"window_ms={window_ms} must exceed the provider's retry span "
                f"({PROVIDER_RETRY_SPAN_MS} ms), or retries slip through as new notifications"
            )
        if max_keys < 1:
            raise ValueError(f"max_keys={max_keys} must be at least 1")
        self._window_ms = window_ms
        self._slot_ms = -(-window_ms // SLOTS_PER_WINDOW)
        self._max_keys = max_keys
        self._slots: dict[int, set[bytes]] = {}
        self._pending: dict[bytes, int] = {}
        self._committed_count = 0
        self._high_water_ms = _NO_TIME
        self._committed_high_water_ms = _NO_TIME
        self._evicted_early = 0
        self._live_from_ms = _NO_TIME
        self._next_horizon_ms = _NO_TIME
        self._live_sets: list[set[bytes]] = []
        self._recompute_live()

    def seen_or_add(self, digest: bytes, event_time_ms: int) -> bool:
        """True: this digest was already emitted inside the window (or earlier in this batch);
        drop the record. False: new; it is now pending until `commit()` or `abort()`."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
        if event_time_ms > self._high_water_ms:
            self._high_water_ms = event_time_ms
            if event_time_ms >= self._next_horizon_ms:
                self._recompute_live()
        pending_time_ms = self._pending.get(digest)
        if pending_time_ms is not None and pending_time_ms >= self._live_from_ms:
            return True
        for keys in self._live_sets:
            if digest in keys:
                return True
        if event_time_ms >= self._live_from_ms:
            self._pending[digest] = event_time_ms
        return False

    def commit(self) -> None:
        """Make the pending keys count, then drop expired slots and enforce the cap."""
        slots = self._slots
        slot_ms = self._slot_ms
        current_id: int | None = None
        current: set[bytes] = set()
        for digest, event_time_ms in self._pending.items():
            slot_id = event_time_ms // slot_ms
            if slot_id != current_id:
                current_id = slot_id
                current = slots.setdefault(slot_id, set())
            current.add(digest)
        self._pending.clear()
        first_live_id = self._live_from_ms // slot_ms  # keys that expired while pending go too
        for slot_id in [slot_id for slot_id in slots if slot_id < first_live_id]:
            del slots[slot_id]
        self._committed_count = sum(len(keys) for keys in slots.values())
        if self._committed_count > self._max_keys:
            self._evict_over_cap()
        self._committed_high_water_ms = self._high_water_ms
        self._recompute_live()

    def abort(self) -> None:
        """Forget everything since the last `commit()`, as if that batch was never read."""
        self._pending.clear()
        self._high_water_ms = self._committed_high_water_ms
        self._recompute_live()

    def __len__(self) -> int:
        """Keys held, pending ones included (some may already be past the window)."""
        return self._committed_count + len(self._pending)

    @property
    def evicted_early(self) -> int:
        """Keys dropped by the `max_keys` cap while still inside the window (monotonic)."""
        return self._evicted_early

    @property
    def replay_span_ms(self) -> int:
        """How much received-at before the committed position a rebuild must re-read."""
        return self._window_ms + self._slot_ms + PROVIDER_RETRY_SPAN_MS

    @property
    def high_water_ms(self) -> int | None:
        """Largest committed event time, None before the first commit."""
        hw = self._committed_high_water_ms
        return None if hw == _NO_TIME else hw

    def approx_bytes(self) -> int:
        """Approximate heap bytes held: set tables, the pending map and the key objects."""
        tables = sum(sys.getsizeof(keys) for keys in self._slots.values())
        pending = sys.getsizeof(self._pending) + _PENDING_TIME_BYTES * len(self._pending)
        return sys.getsizeof(self) + tables + pending + _KEY_OBJECT_BYTES * len(self)

    def _evict_over_cap(self) -> None:
        slots = self._slots
        while self._committed_count > self._max_keys:
            oldest_id = min(slots)
            oldest = slots[oldest_id]
            excess = self._committed_count - self._max_keys
            if len(oldest) <= excess:
                removed = len(oldest)
                del slots[oldest_id]
            else:
                removed = excess
                for _ in range(excess):
                    oldest.pop()
            self._committed_count -= removed
            self._evicted_early += removed  # only live slots are left at this point

    def _recompute_live(self) -> None:
        """Refresh the live slot list and the high water at which it next changes."""
        first_live_id = (self._high_water_ms - self._window_ms) // self._slot_ms
        self._live_from_ms = first_live_id * self._slot_ms
        self._next_horizon_ms = self._live_from_ms + self._slot_ms + self._window_ms
        self._live_sets = [
            self._slots[slot_id]
            for slot_id in sorted(self._slots, reverse=True)  # newest first: retries are recent
            if slot_id >= first_live_id
        ]
