"""The dedupe window: exact answers, event-time expiry, transactional batches, bounded memory."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.delta import decode, encode, encoded_size
from consumers.processor.window import (
    DEFAULT_BUFFER_KEYS,
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


Make = Callable[..., DedupeWindow]


@pytest.fixture(params=[DEFAULT_BUFFER_KEYS, 1], ids=["keys-in-dict", "keys-in-runs"])
def make(request: pytest.FixtureRequest) -> Make:
    """A window whose committed keys stay in its dict, or are merged into runs every commit:
    the answers must not depend on where a key is held."""
    return partial(DedupeWindow, buffer_keys=request.param)


def key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=DIGEST_SIZE).digest()


def committed(window: DedupeWindow, digest: bytes, event_time_ms: int) -> bool:
    answer = window.seen_or_add(digest, event_time_ms)
    window.commit()
    return answer


def test_retry_inside_window_is_a_duplicate(make: Make) -> None:
    """A provider retry 30 minutes after its original is reported as already seen."""
    window = make(WINDOW)
    assert committed(window, key("a"), T0) is False
    assert committed(window, key("a"), T0 + 30 * MINUTE) is True


def test_key_is_remembered_for_at_least_the_window(make: Make) -> None:
    """A key stays a duplicate until the newest event time is a full window past its own."""
    window = make(WINDOW)
    committed(window, key("a"), T0 + SLOT - 1)  # the last ms of its slot: the tightest case
    assert committed(window, key("a"), T0 + SLOT - 1 + WINDOW) is True


def test_key_is_forgotten_a_window_and_a_slot_later(make: Make) -> None:
    """Once event time passes window plus one slot, the same digest counts as new again."""
    window = make(WINDOW)
    committed(window, key("a"), T0)
    assert committed(window, key("a"), T0 + WINDOW + SLOT - 1) is True
    committed(window, key("clock"), T0 + WINDOW + SLOT)
    assert committed(window, key("a"), T0 + WINDOW + SLOT) is False


def test_expiry_follows_event_time_not_arrival_count(make: Make) -> None:
    """Expired keys leave memory at commit once the newest event time has moved on."""
    window = make(WINDOW)
    for i in range(100):
        window.seen_or_add(key(f"old{i}"), T0 + i)
    window.commit()
    assert len(window) == 100
    committed(window, key("new"), T0 + WINDOW + SLOT)
    assert len(window) == 1


def test_abort_forgets_the_pending_batch(make: Make) -> None:
    """Keys seen in a batch whose transaction aborted are new when the batch is re-read."""
    window = make(WINDOW)
    assert window.seen_or_add(key("a"), T0) is False
    window.abort()
    assert window.seen_or_add(key("a"), T0) is False
    window.commit()
    window.abort()
    assert window.seen_or_add(key("a"), T0) is True


def test_abort_rolls_back_the_high_water_mark(make: Make) -> None:
    """An aborted batch with a far-future event time does not expire committed keys."""
    window = make(WINDOW)
    committed(window, key("a"), T0)
    window.seen_or_add(key("future"), T0 + 10 * WINDOW)
    window.abort()
    assert window.high_water_ms == T0
    assert window.seen_or_add(key("a"), T0 + 1) is True


def test_duplicate_within_one_pending_batch_is_detected(make: Make) -> None:
    """A retry that lands in the same uncommitted batch as its original is still dropped."""
    window = make(WINDOW)
    assert window.seen_or_add(key("a"), T0) is False
    assert window.seen_or_add(key("b"), T0 + 1) is False
    assert window.seen_or_add(key("a"), T0 + 5 * MINUTE) is True
    assert len(window) == 2


def test_out_of_order_key_expires_by_its_own_time(make: Make) -> None:
    """A late-arriving older key is remembered by its own event time, not by arrival order."""
    window = make(WINDOW)
    committed(window, key("young"), T0 + 4 * HOUR)
    committed(window, key("old"), T0)  # arrives after "young" but is 4 h older
    assert committed(window, key("old"), T0 + 4 * HOUR) is True
    committed(window, key("clock"), T0 + WINDOW + SLOT + 1)
    assert committed(window, key("old"), T0 + WINDOW + SLOT + 1) is False
    assert committed(window, key("young"), T0 + WINDOW + SLOT + 1) is True


def test_older_key_does_not_keep_memory_once_its_slot_expired(make: Make) -> None:
    """A record whose own time is already outside the window is new and is not kept."""
    window = make(WINDOW)
    committed(window, key("clock"), T0 + 3 * WINDOW)
    assert committed(window, key("ancient"), T0) is False
    assert committed(window, key("ancient"), T0) is False
    assert len(window) == 1


def test_cap_evicts_oldest_keys_first_and_counts_them(make: Make) -> None:
    """Over max_keys the oldest keys go first, and each one still in the window is counted."""
    window = make(WINDOW, max_keys=2)
    for i in range(4):  # one key per slot, all four slots live
        window.seen_or_add(key(f"k{i}"), T0 + i * SLOT)
    window.commit()
    assert len(window) == 2
    assert window.evicted_early == 2
    assert window.seen_or_add(key("k2"), T0 + 3 * SLOT) is True
    assert window.seen_or_add(key("k3"), T0 + 3 * SLOT) is True
    assert window.seen_or_add(key("k0"), T0 + 3 * SLOT) is False  # the price: a duplicate


def test_cap_evicts_part_of_a_slot_when_that_is_enough(make: Make) -> None:
    """The cap trims the oldest slot down to the limit instead of emptying it."""
    window = make(WINDOW, max_keys=5)
    for i in range(8):
        window.seen_or_add(key(f"k{i}"), T0 + i)
    window.commit()
    assert len(window) == 5
    assert window.evicted_early == 3
    remembered = sum(window.seen_or_add(key(f"k{i}"), T0) for i in range(8))
    assert remembered == 5


def test_expiry_by_time_is_not_counted_as_early_eviction(make: Make) -> None:
    """Keys that simply aged out do not count against the cap metric."""
    window = make(WINDOW, max_keys=1)
    committed(window, key("a"), T0)
    committed(window, key("b"), T0 + WINDOW + SLOT)
    assert len(window) == 1
    assert window.evicted_early == 0


def test_a_restore_from_the_records_gives_the_same_answers(make: Make) -> None:
    """Feeding the committed records to a fresh window reproduces the live answers."""
    rng = random.Random(7)
    records = _retrying_provider(rng, count=3_000)
    cut = 2_000
    live = make(WINDOW)
    for start in range(0, cut, 50):
        batch = records[start : start + 50]
        for digest, event_time_ms in batch:  # first attempt of the batch aborts
            live.seen_or_add(digest, event_time_ms)
        live.abort()
        for digest, event_time_ms in batch:
            live.seen_or_add(digest, event_time_ms)
        live.commit()

    rebuilt = make(WINDOW)
    for start in range(0, cut, 997):  # different batch boundaries on purpose
        for digest, event_time_ms in records[start : min(start + 997, cut)]:
            rebuilt.seen_or_add(digest, event_time_ms)
        rebuilt.commit()

    live_answers = [live.seen_or_add(d, t) for d, t in records[cut:]]
    rebuilt_answers = [rebuilt.seen_or_add(d, t) for d, t in records[cut:]]
    assert live_answers == rebuilt_answers
    assert any(live_answers)
    assert not all(live_answers)


def test_rebuild_from_a_recent_offset_suffices(make: Make) -> None:
    """A restore that starts `restore_span_ms` before the committed high water is enough."""
    rng = random.Random(11)
    records = _retrying_provider(rng, count=6_000)
    cut = 4_000
    live = make(WINDOW)
    for digest, event_time_ms in records[:cut]:
        live.seen_or_add(digest, event_time_ms)
    live.commit()
    assert live.high_water_ms is not None
    restore_from_ms = live.high_water_ms - live.restore_span_ms - 10 * MINUTE  # margin: disorder
    start = next(i for i, (_, t) in enumerate(records) if t >= restore_from_ms)
    assert start > 0

    rebuilt = make(WINDOW)
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
    """The memory gauge grows with the keys held: ~100 bytes a key while a key waits in the
    dict, under 30 once merged into the packed runs."""
    buffered = DedupeWindow(WINDOW, buffer_keys=20_000)
    merged = DedupeWindow(WINDOW, buffer_keys=1)
    empty = buffered.approx_bytes(), merged.approx_bytes()
    for window in (buffered, merged):
        for i in range(10_000):
            window.seen_or_add(key(str(i)), T0 + i)
        window.commit()
    assert 64 < (buffered.approx_bytes() - empty[0]) / len(buffered) < 200
    assert 16 < (merged.approx_bytes() - empty[1]) / len(merged) < 30


@pytest.mark.parametrize("window_ms", [PROVIDER_RETRY_SPAN_MS, 5 * MINUTE, 0])
def test_window_shorter_than_retry_span_is_refused(window_ms: int) -> None:
    """A window that retries could outlive is a configuration error, reported at start-up."""
    with pytest.raises(ValueError, match="retry span"):
        DedupeWindow(window_ms)


def test_digest_of_wrong_width_is_refused() -> None:
    """Only fixed-width identity digests are accepted, so memory per key stays as measured."""
    with pytest.raises(ValueError, match="16 bytes"):
        DedupeWindow(WINDOW).seen_or_add(b"short", T0)


def test_high_water_mark_is_committed_event_time(make: Make) -> None:
    """The restore anchor is None on a fresh window and follows committed event time only."""
    window = make(WINDOW)
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
@given(operations=_operations, buffer_keys=st.sampled_from([1, 2, 3, DEFAULT_BUFFER_KEYS]))
def test_window_agrees_with_reference_model(
    operations: list[tuple[str, int, int]], buffer_keys: int
) -> None:
    """For any sequence of adds, commits and aborts the window answers as the simple model."""
    window_ms = 2 * HOUR
    window = DedupeWindow(window_ms, max_keys=1_000, buffer_keys=buffer_keys)
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


# -- the changelog: deltas, snapshots, and the batch form -----------------------------------

_ADD_STEP = st.integers(-3 * HOUR, 3 * HOUR)
_changelog_operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 11), _ADD_STEP),
        st.tuples(st.just("commit"), st.just(0), st.just(0)),
        st.tuples(st.just("abort"), st.just(0), st.just(0)),
    ),
    max_size=120,
)
_SMALL_WINDOW = 2 * HOUR


def drive(
    window: DedupeWindow,
    operations: list[tuple[str, int, int]],
    clock: int,
    on_commit: Callable[[], None] = lambda: None,
) -> tuple[list[bool], int]:
    """Run the operations; the answers, and the clock where they left it."""
    answers = []
    for operation, key_index, step_ms in operations:
        if operation == "add":
            clock += step_ms
            answers.append(window.seen_or_add(key(f"k{key_index}"), clock))
        elif operation == "commit":
            on_commit()
            window.commit()
        else:
            window.abort()
    return answers, clock


def same_state(window: DedupeWindow, other: DedupeWindow) -> bool:
    """Equal committed state: equal snapshots, byte for byte (runs are canonical)."""
    return [encode(part) for part in window.snapshot()] == [
        encode(part) for part in other.snapshot()
    ] and (len(window), window.high_water_ms) == (len(other), other.high_water_ms)


@settings(max_examples=300, database=None, deadline=None)
@given(
    operations=_changelog_operations,
    later=_changelog_operations,
    max_keys=st.sampled_from([2, 5, 1_000]),
    buffers=st.tuples(st.sampled_from([1, 3, 1_000]), st.sampled_from([1, 3, 1_000])),
)
def test_deltas_of_each_commit_rebuild_a_window_that_answers_the_same(
    operations: list[tuple[str, int, int]],
    later: list[tuple[str, int, int]],
    max_keys: int,
    buffers: tuple[int, int],
) -> None:
    """A window rebuilt from the deltas of the original's commits, applied in order, answers
    every later call as the original does, even after cap evictions."""
    original = DedupeWindow(_SMALL_WINDOW, max_keys, buffer_keys=buffers[0])
    records: list[bytes] = []
    _, clock = drive(
        original, operations, T0, lambda: records.append(encode(original.pending_delta()))
    )
    original.abort()  # the batch in flight when the process died
    rebuilt = DedupeWindow(_SMALL_WINDOW, max_keys, buffer_keys=buffers[1])
    for record in records:
        rebuilt.apply_delta(decode(record))
    assert same_state(rebuilt, original)
    assert rebuilt.evicted_early == original.evicted_early
    assert drive(rebuilt, later, clock)[0] == drive(original, later, clock)[0]
    assert same_state(rebuilt, original)


@settings(max_examples=200, database=None, deadline=None)
@given(
    operations=_changelog_operations,
    later=_changelog_operations,
    part_keys=st.sampled_from([1, 2, 5, 10_000]),
    buffer_keys=st.sampled_from([1, 3, 1_000]),
)
def test_snapshot_rebuilds_a_window_that_answers_the_same(
    operations: list[tuple[str, int, int]],
    later: list[tuple[str, int, int]],
    part_keys: int,
    buffer_keys: int,
) -> None:
    """A snapshot, in parts of bounded size, applied to a window that held other keys, gives
    a window that answers every later call as the original does."""
    original = DedupeWindow(_SMALL_WINDOW, 1_000, buffer_keys=buffer_keys)
    _, clock = drive(original, operations, T0)
    pending = len(original)
    parts = original.snapshot(encoded_size(1, part_keys))
    assert len(original) == pending  # a snapshot does not touch the batch in flight
    original.abort()
    assert all(len(encode(part)) <= encoded_size(1, part_keys) for part in parts)
    assert [part.replaces for part in parts] == [True] + [False] * (len(parts) - 1)
    rebuilt = DedupeWindow(_SMALL_WINDOW, 1_000, buffer_keys=buffer_keys)
    drive(rebuilt, [("add", 99, 0), ("add", 0, 4 * HOUR), ("commit", 0, 0)], clock + HOUR)
    for part in parts:
        rebuilt.apply_delta(decode(encode(part)))
    assert same_state(rebuilt, original)
    assert drive(rebuilt, later, clock)[0] == drive(original, later, clock)[0]


_batches = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 11), _ADD_STEP), max_size=12),
        st.sampled_from(["commit", "abort"]),
    ),
    max_size=12,
)


@settings(max_examples=300, database=None, deadline=None)
@given(batches=_batches, buffer_keys=st.sampled_from([1, 3, 1_000]))
def test_batch_form_answers_as_one_call_per_record(
    batches: list[tuple[list[tuple[int, int]], str]], buffer_keys: int
) -> None:
    """seen_or_add_many gives the answers and the state of calling seen_or_add in order."""
    single = DedupeWindow(_SMALL_WINDOW, 8, buffer_keys=buffer_keys)
    batched = DedupeWindow(_SMALL_WINDOW, 8, buffer_keys=buffer_keys)
    clock = T0
    for records, end in batches:
        digests, times = [], []
        for key_index, step_ms in records:
            clock += step_ms
            digests.append(key(f"k{key_index}"))
            times.append(clock)
        expected = [single.seen_or_add(d, t) for d, t in zip(digests, times, strict=True)]
        assert batched.seen_or_add_many(digests, times) == expected
        for window in (single, batched):
            window.commit() if end == "commit" else window.abort()
        assert same_state(batched, single)


def test_batch_form_refuses_a_digest_of_wrong_width() -> None:
    """A wrong-width digest anywhere in a batch is refused before any key is added."""
    window = DedupeWindow(WINDOW)
    with pytest.raises(ValueError, match="16 bytes"):
        window.seen_or_add_many([key("a"), b"short"], [T0, T0])
    assert len(window) == 0


def test_pending_delta_holds_the_batch_keys_that_stay() -> None:
    """The delta of a batch: its new keys by slot, ascending, without the keys that the
    batch's own high water already put past the window, and that high water."""
    window = DedupeWindow(WINDOW)
    committed(window, key("old"), T0 + SLOT)
    window.seen_or_add(key("old"), T0 + SLOT)  # a duplicate: not in the delta
    window.seen_or_add(key("gone"), T0)  # live now, past the window by the batch's end
    window.seen_or_add(key("b"), T0 + SLOT)
    window.seen_or_add(key("a"), T0 + SLOT + 5)
    window.seen_or_add(key("c"), T0 + WINDOW + SLOT)
    delta = window.pending_delta()
    assert delta.high_water_ms == T0 + WINDOW + SLOT
    assert delta.slots == (
        (T0 // SLOT + 1, b"".join(sorted([key("a"), key("b")]))),
        (T0 // SLOT + 5, key("c")),
    )


def test_apply_delta_refuses_what_it_cannot_apply_and_changes_nothing() -> None:
    """Deltas from another window length, out of commit order, with a slot after their high
    water, or onto a batch in flight are refused, and the window stays as it was."""
    source = DedupeWindow(WINDOW)
    source.seen_or_add(key("a"), T0 + HOUR)
    first = source.pending_delta()
    source.commit()
    window = DedupeWindow(WINDOW)
    window.apply_delta(first)
    before = window.snapshot()
    other_length = DedupeWindow(WINDOW + HOUR).pending_delta()._replace(high_water_ms=T0 + HOUR)
    refused = [
        (other_length, "another dedupe window length"),
        (first._replace(high_water_ms=T0), "commit order"),
        (first._replace(slots=((T0 // SLOT + 9, key("x")),)), "after its high water"),
        (first._replace(slots=((T0 // SLOT, key("x")[:7]),)), "partial digest"),
    ]
    for delta, reason in refused:
        with pytest.raises(ValueError, match=reason):
            window.apply_delta(delta)
    window.seen_or_add(key("b"), T0 + HOUR)
    with pytest.raises(ValueError, match="pending keys"):
        window.apply_delta(first)
    window.abort()
    assert window.snapshot() == before


def test_cap_drops_the_smallest_digests_of_the_oldest_slot() -> None:
    """Which keys the cap forgets is a function of the keys held, not of arrival order, so a
    window rebuilt from deltas forgets the same ones."""
    names = [f"k{i}" for i in range(8)]
    survivors = sorted(names, key=key)[3:]
    for order in (names, names[::-1]):
        window = DedupeWindow(WINDOW, max_keys=5, buffer_keys=1)
        for name in order:
            window.seen_or_add(key(name), T0)
        window.commit()
        assert window.evicted_early == 3
        assert sorted(name for name in names if window.seen_or_add(key(name), T0)) == sorted(
            survivors
        )
        window.abort()


def test_cap_takes_the_oldest_slot_even_while_its_keys_wait_in_the_dict() -> None:
    """A late key of an older slot, not merged into a run yet, is the first the cap drops."""
    window = DedupeWindow(WINDOW, max_keys=3, buffer_keys=2)
    for name in ("a", "b", "c"):
        window.seen_or_add(key(name), T0 + SLOT)
    window.commit()  # three keys, more than buffer_keys: merged into the slot's run
    committed(window, key("late"), T0)
    assert window.evicted_early == 1
    assert window.seen_or_add(key("late"), T0 + SLOT) is False
    assert all(window.seen_or_add(key(name), T0 + SLOT) for name in ("a", "b", "c"))


def test_empty_snapshot_clears_the_window_it_is_applied_to() -> None:
    """The snapshot of a window that holds nothing still replaces what the target held."""
    window = DedupeWindow(WINDOW)
    committed(window, key("a"), T0)
    [part] = DedupeWindow(WINDOW).snapshot()
    window.apply_delta(part)
    assert len(window) == 0
    assert window.high_water_ms is None
    assert window.seen_or_add(key("a"), T0) is False
