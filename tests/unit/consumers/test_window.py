"""The dedupe window: exact answers, event-time expiry, transactional batches, bounded memory."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.window import (
    DIGEST_SIZE,
    PROVIDER_RETRY_SPAN_MS,
    SLOTS_PER_WINDOW,
    DedupeWindow,
)

MINUTE = 60 * 1000
HOUR = 60 * MINUTE
WINDOW = 6 * HOUR
SLOT = WINDOW // SLOTS_PER_WINDOW
T0 = 326_667 * SLOT  # a received-at in epoch ms (2025-11-24), at the start of a slot


def key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=DIGEST_SIZE).digest()


def committed(window: DedupeWindow, digest: bytes, event_time_ms: int) -> bool:
    answer = window.seen_or_add(digest, event_time_ms)
    window.commit()
    return answer


def test_retry_inside_window_is_a_duplicate() -> None:
    """A provider retry 30 minutes after its original is reported as already seen."""
    window = DedupeWindow(WINDOW)
    assert committed(window, key("a"), T0) is False
    assert committed(window, key("a"), T0 + 30 * MINUTE) is True


def test_key_is_remembered_for_at_least_the_window() -> None:
    """A key stays a duplicate until the newest event time is a full window past its own."""
    window = DedupeWindow(WINDOW)
    committed(window, key("a"), T0 + SLOT - 1)  # the last ms of its slot: the tightest case
    assert committed(window, key("a"), T0 + SLOT - 1 + WINDOW) is True


def test_key_is_forgotten_a_window_and_a_slot_later() -> None:
    """Once event time passes window plus one slot, the same digest counts as new again."""
    window = DedupeWindow(WINDOW)
    committed(window, key("a"), T0)
    assert committed(window, key("a"), T0 + WINDOW + SLOT - 1) is True
    committed(window, key("clock"), T0 + WINDOW + SLOT)
    assert committed(window, key("a"), T0 + WINDOW + SLOT) is False


def test_expiry_follows_event_time_not_arrival_count() -> None:
    """Expired keys leave memory at commit once the newest event time has moved on."""
    window = DedupeWindow(WINDOW)
    for i in range(100):
        window.seen_or_add(key(f"old{i}"), T0 + i)
    window.commit()
    assert len(window) == 100
    committed(window, key("new"), T0 + WINDOW + SLOT)
    assert len(window) == 1


def test_abort_forgets_the_pending_batch() -> None:
    """Keys seen in a batch whose transaction aborted are new when the batch is re-read."""
    window = DedupeWindow(WINDOW)
    assert window.seen_or_add(key("a"), T0) is False
    window.abort()
    assert window.seen_or_add(key("a"), T0) is False
    window.commit()
    window.abort()
    assert window.seen_or_add(key("a"), T0) is True


def test_abort_rolls_back_the_high_water_mark() -> None:
    """An aborted batch with a far-future event time does not expire committed keys."""
    window = DedupeWindow(WINDOW)
    committed(window, key("a"), T0)
    window.seen_or_add(key("future"), T0 + 10 * WINDOW)
    window.abort()
    assert window.high_water_ms == T0
    assert window.seen_or_add(key("a"), T0 + 1) is True


def test_duplicate_within_one_pending_batch_is_detected() -> None:
    """A retry that lands in the same uncommitted batch as its original is still dropped."""
    window = DedupeWindow(WINDOW)
    assert window.seen_or_add(key("a"), T0) is False
    assert window.seen_or_add(key("b"), T0 + 1) is False
    assert window.seen_or_add(key("a"), T0 + 5 * MINUTE) is True
    assert len(window) == 2


def test_out_of_order_key_expires_by_its_own_time() -> None:
    """A late-arriving older key is remembered by its own event time, not by arrival order."""
    window = DedupeWindow(WINDOW)
    committed(window, key("young"), T0 + 4 * HOUR)
    committed(window, key("old"), T0)  # arrives after "young" but is 4 h older
    assert committed(window, key("old"), T0 + 4 * HOUR) is True
    committed(window, key("clock"), T0 + WINDOW + SLOT + 1)
    assert committed(window, key("old"), T0 + WINDOW + SLOT + 1) is False
    assert committed(window, key("young"), T0 + WINDOW + SLOT + 1) is True


def test_older_key_does_not_keep_memory_once_its_slot_expired() -> None:
    """A record whose own time is already outside the window is new and is not kept."""
    window = DedupeWindow(WINDOW)
    committed(window, key("clock"), T0 + 3 * WINDOW)
    assert committed(window, key("ancient"), T0) is False
    assert committed(window, key("ancient"), T0) is False
    assert len(window) == 1


def test_cap_evicts_oldest_keys_first_and_counts_them() -> None:
    """Over max_keys the oldest keys go first, and each one still in the window is counted."""
    window = DedupeWindow(WINDOW, max_keys=2)
    for i in range(4):  # one key per slot, all four slots live
        window.seen_or_add(key(f"k{i}"), T0 + i * SLOT)
    window.commit()
    assert len(window) == 2
    assert window.evicted_early == 2
    assert window.seen_or_add(key("k2"), T0 + 3 * SLOT) is True
    assert window.seen_or_add(key("k3"), T0 + 3 * SLOT) is True
    assert window.seen_or_add(key("k0"), T0 + 3 * SLOT) is False  # the price: a duplicate


def test_cap_evicts_part_of_a_slot_when_that_is_enough() -> None:
    """The cap trims the oldest slot down to the limit instead of emptying it."""
    window = DedupeWindow(WINDOW, max_keys=5)
    for i in range(8):
        window.seen_or_add(key(f"k{i}"), T0 + i)
    window.commit()
    assert len(window) == 5
    assert window.evicted_early == 3
    remembered = sum(window.seen_or_add(key(f"k{i}"), T0) for i in range(8))
    assert remembered == 5


def test_expiry_by_time_is_not_counted_as_early_eviction() -> None:
    """Keys that simply aged out do not count against the cap metric."""
    window = DedupeWindow(WINDOW, max_keys=1)
    committed(window, key("a"), T0)
    committed(window, key("b"), T0 + WINDOW + SLOT)
    assert len(window) == 1
    assert window.evicted_early == 0


def test_rebuild_by_replay_gives_the_same_answers() -> None:
    """Replaying the committed records into a fresh window reproduces the live answers."""
    rng = random.Random(7)
    records = _retrying_provider(rng, count=3_000)
    cut = 2_000
    live = DedupeWindow(WINDOW)
    for start in range(0, cut, 50):
        batch = records[start : start + 50]
        for digest, event_time_ms in batch:  # first attempt of the batch aborts
            live.seen_or_add(digest, event_time_ms)
        live.abort()
        for digest, event_time_ms in batch:
            live.seen_or_add(digest, event_time_ms)
        live.commit()

    rebuilt = DedupeWindow(WINDOW)
    for start in range(0, cut, 997):  # different batch boundaries on purpose
        for digest, event_time_ms in records[start : min(start + 997, cut)]:
            rebuilt.seen_or_add(digest, event_time_ms)
        rebuilt.commit()

    live_answers = [live.seen_or_add(d, t) for d, t in records[cut:]]
    rebuilt_answers = [rebuilt.seen_or_add(d, t) for d, t in records[cut:]]
    assert live_answers == rebuilt_answers
    assert any(live_answers)
    assert not all(live_answers)


def test_rebuild_from_a_recent_offset_suffices() -> None:
    """A replay that starts `replay_span_ms` before the committed high water is enough."""
    rng = random.Random(11)
    records = _retrying_provider(rng, count=6_000)
    cut = 4_000
    live = DedupeWindow(WINDOW)
    for digest, event_time_ms in records[:cut]:
        live.seen_or_add(digest, event_time_ms)
    live.commit()
    assert live.high_water_ms is not None
    replay_from_ms = live.high_water_ms - live.replay_span_ms - 10 * MINUTE  # margin: disorder
    start = next(i for i, (_, t) in enumerate(records) if t >= replay_from_ms)
    assert start > 0

    rebuilt = DedupeWindow(WINDOW)
    for digest, event_time_ms in records[start:cut]:
        rebuilt.seen_or_add(digest, event_time_ms)
    rebuilt.commit()

    resent_at_ms = records[cut][1]  # committed digests of every age, some long forgotten
    resent = [(records[cut - 1 - back][0], resent_at_ms) for back in range(0, 700, 7)]
    suffix = resent + records[cut:]
    live_answers = [live.seen_or_add(d, t) for d, t in suffix]
    assert live_answers == [rebuilt.seen_or_add(d, t) for d, t in suffix]
    assert 0 < sum(live_answers[: len(resent)]) < len(resent)


def test_approx_bytes_tracks_held_keys() -> None:
    """The memory gauge grows with the keys held and stays in the measured per-key range."""
    window = DedupeWindow(WINDOW)
    empty = window.approx_bytes()
    for i in range(10_000):
        window.seen_or_add(key(str(i)), T0 + i)
    window.commit()
    per_key = (window.approx_bytes() - empty) / len(window)
    assert 64 < per_key < 200


@pytest.mark.parametrize("window_ms", [PROVIDER_RETRY_SPAN_MS, 5 * MINUTE, 0])
def test_window_shorter_than_retry_span_is_refused(window_ms: int) -> None:
    """A window that retries could outlive is a configuration error, reported at start-up."""
    with pytest.raises(ValueError, match="retry span"):
        DedupeWindow(window_ms)


def test_digest_of_wrong_width_is_refused() -> None:
    """Only fixed-width identity digests are accepted, so memory per key stays as measured."""
    with pytest.raises(ValueError, match="16 bytes"):
        DedupeWindow(WINDOW).seen_or_add(b"short", T0)


def test_high_water_mark_is_committed_event_time() -> None:
    """The replay anchor is None on a fresh window and follows committed event time only."""
    window = DedupeWindow(WINDOW)
    assert window.high_water_ms is None
    committed(window, key("a"), T0 + 5)
    committed(window, key("b"), T0 + 1)
    window.seen_or_add(key("c"), T0 + 9)
    assert window.high_water_ms == T0 + 5


def _retrying_provider(rng: random.Random, count: int) -> list[tuple[bytes, int]]:
    """Records as the raw topic holds them: received-at mostly rising with a little disorder,
    and a fifth of the notifications retried up to five times, about five minutes apart."""
    records: list[tuple[bytes, int]] = []
    clock = T0
    serial = 0
    while len(records) < count:
        clock += rng.randrange(0, 20 * MINUTE)
        serial += 1
        digest = key(f"n{serial}")
        records.append((digest, clock - rng.randrange(0, 2 * MINUTE)))
        if rng.random() < 0.2:
            for attempt in range(1, rng.randrange(2, 7)):
                records.append((digest, clock + attempt * 5 * MINUTE + rng.randrange(MINUTE)))
    records.sort(key=lambda record: record[1] + rng.randrange(-MINUTE, MINUTE))
    return records[:count]


class ReferenceWindow:
    """The window rule with no eviction, no slots held in memory and plain dicts: the oracle."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.slot_ms = -(-window_ms // SLOTS_PER_WINDOW)
        self.first_seen: dict[bytes, int] = {}
        self.pending: dict[bytes, int] = {}
        self.high_water: int | None = None
        self.committed_high_water: int | None = None

    def seen_or_add(self, digest: bytes, event_time_ms: int) -> bool:
        if self.high_water is None or event_time_ms > self.high_water:
            self.high_water = event_time_ms
        live_from = (self.high_water - self.window_ms) // self.slot_ms * self.slot_ms
        first = self.pending.get(digest, self.first_seen.get(digest))
        if first is not None and first >= live_from:
            return True
        self.pending[digest] = event_time_ms
        return False

    def commit(self) -> None:
        self.first_seen.update(self.pending)
        self.pending.clear()
        self.committed_high_water = self.high_water

    def abort(self) -> None:
        self.pending.clear()
        self.high_water = self.committed_high_water


_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 7),  # few keys, so repeats are common
            st.integers(-3 * HOUR, 3 * HOUR),  # event time moves both ways
        ),
        st.tuples(st.just("commit"), st.just(0), st.just(0)),
        st.tuples(st.just("abort"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, database=None, deadline=None)
@given(operations=_operations)
def test_window_agrees_with_reference_model(operations: list[tuple[str, int, int]]) -> None:
    """For any sequence of adds, commits and aborts the window answers as the simple model."""
    window_ms = 2 * HOUR
    window = DedupeWindow(window_ms, max_keys=1_000)
    reference = ReferenceWindow(window_ms)
    clock = T0
    for operation, key_index, step_ms in operations:
        if operation == "add":
            clock += step_ms
            digest = key(f"k{key_index}")
            assert window.seen_or_add(digest, clock) == reference.seen_or_add(digest, clock)
        elif operation == "commit":
            window.commit()
            reference.commit()
        else:
            window.abort()
            reference.abort()
