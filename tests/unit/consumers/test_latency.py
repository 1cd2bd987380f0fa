"""The latency join: both arrival orders, bounded waiting, transactional batches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.latency import (
    SLOTS_PER_MAX_AGE,
    TAKE_FINAL,
    WAIT_SENT,
    Latency,
    LatencyDelta,
    LatencyJoin,
)

MINUTE = 60 * 1000
HOUR = 60 * MINUTE
MAX_AGE = 6 * HOUR
SLOT = MAX_AGE // SLOTS_PER_MAX_AGE
T0 = 326_667 * SLOT  # a received-at in epoch ms (2025-11-24), at the start of a slot


def test_sent_then_final_puts_latency_on_the_final() -> None:
    """In the usual order the final's event carries final minus sent provider time."""
    join = LatencyJoin(MAX_AGE)
    assert join.observe_sent("TU1T", T0, T0 + 40) is None
    assert join.observe_final("TU1T", T0 + 31_500, T0 + 31_560) == Latency(31_500, False)
    assert len(join) == 0


def test_final_then_sent_puts_flagged_latency_on_the_late_sent() -> None:
    """When a retried sent is overtaken by its final, the late sent's event carries it."""
    join = LatencyJoin(MAX_AGE)
    assert join.observe_final("TU1T", T0 + 31_500, T0 + 31_560) is None
    join.commit()
    latency = join.observe_sent("TU1T", T0, T0 + 5 * MINUTE)
    assert latency == Latency(31_500, final_first=True)
    assert len(join) == 0


def test_latency_uses_provider_time_not_arrival_time() -> None:
    """Latency is measured on the times the runtime passes as occurred, whatever the arrival."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0 + 10 * MINUTE)  # the sent was retried: it arrived late
    latency = join.observe_final("a", T0 + 2_000, T0 + 2_100)
    assert latency is not None
    assert latency.latency_ms == 2_000


def test_negative_latency_is_reported_as_is() -> None:
    """Disagreeing timestamps show up as a negative latency instead of being hidden."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0 + 500, T0)
    assert join.observe_final("a", T0, T0 + 1) == Latency(-500, False)


def test_first_sent_counts_when_sent_repeats() -> None:
    """A second sent for a waiting message is ignored; latency runs from the first."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    assert join.observe_sent("a", T0 + 100, T0 + 100) is None
    assert join.observe_final("a", T0 + 1_000, T0 + 1_000) == Latency(1_000, False)


def test_first_final_counts_when_finals_arrive_before_the_sent() -> None:
    """Of several finals waiting for a sent, the first one is paired."""
    join = LatencyJoin(MAX_AGE)
    join.observe_final("a", T0 + 1_000, T0 + 1_000)
    assert join.observe_final("a", T0 + 9_000, T0 + 9_000) is None
    assert join.observe_sent("a", T0, T0 + 10_000) == Latency(1_000, True)


def test_each_message_gets_one_latency() -> None:
    """A final after the pair completed gets no latency and later expires as unmatched."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    assert join.observe_final("a", T0 + 1_000, T0 + 1_000) is not None
    assert join.observe_final("a", T0 + 2_000, T0 + 2_000) is None
    join.commit()
    join.observe_sent("clock", T0 + MAX_AGE + SLOT, T0 + MAX_AGE + SLOT)
    join.commit()
    assert join.expired_final == 1


def test_unmatched_sent_expires_after_max_age_and_is_counted() -> None:
    """A sent with no receipt is dropped once received-at moves max age past it, and counted."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("no-receipt", T0, T0)
    join.commit()
    join.observe_sent("clock", T0 + MAX_AGE + SLOT - 1, T0 + MAX_AGE + SLOT - 1)
    join.commit()
    assert (len(join), join.expired_sent) == (2, 0)
    join.observe_sent("clock2", T0 + MAX_AGE + SLOT, T0 + MAX_AGE + SLOT)
    join.commit()
    assert (len(join), join.expired_sent, join.expired_final) == (2, 1, 0)
    late_final = T0 + MAX_AGE + SLOT + 1
    assert join.observe_final("no-receipt", late_final, late_final) is None


def test_waiting_entry_still_pairs_at_max_age() -> None:
    """A receipt that arrives max age after its sent still yields a latency."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0 + SLOT - 1, T0 + SLOT - 1)
    join.commit()
    final_ms = T0 + SLOT - 1 + MAX_AGE
    assert join.observe_final("a", final_ms, final_ms) == Latency(MAX_AGE, False)


def test_unmatched_final_expires_and_is_counted() -> None:
    """A final whose sent never comes (E101 with no N101) expires as an unmatched final."""
    join = LatencyJoin(MAX_AGE)
    join.observe_final("failed", T0, T0)
    join.commit()
    join.observe_final("clock", T0 + 2 * MAX_AGE, T0 + 2 * MAX_AGE)
    join.commit()
    assert (join.expired_sent, join.expired_final, len(join)) == (0, 1, 1)


def test_expiry_follows_received_at_not_provider_time() -> None:
    """A provider timestamp hours off does not expire other messages' waiting entries."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    join.observe_sent("skewed", T0 + 10 * MAX_AGE, T0 + 1)
    join.commit()
    assert join.observe_final("a", T0 + 900, T0 + 900) == Latency(900, False)


def test_abort_restores_the_sent_a_final_consumed() -> None:
    """If the batch that paired a final aborts, the re-read final is paired again."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    join.commit()
    assert join.observe_final("a", T0 + 700, T0 + 700) == Latency(700, False)
    join.abort()
    assert join.observe_final("a", T0 + 700, T0 + 700) == Latency(700, False)


def test_abort_forgets_entries_added_in_the_batch() -> None:
    """Entries from an aborted batch do not wait, pair or expire."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    join.observe_final("b", T0, T0)
    join.observe_sent("b", T0 - 50, T0 + 1)  # pairs with the final of the same batch
    join.abort()
    assert len(join) == 0
    assert join.observe_final("a", T0 + 1, T0 + 1) is None
    join.observe_sent("clock", T0 + 2 * MAX_AGE, T0 + 2 * MAX_AGE)
    join.abort()
    join.commit()
    assert (join.expired_sent, join.expired_final) == (0, 0)


def test_abort_rolls_back_the_high_water_mark() -> None:
    """An aborted batch with a far-future received-at does not expire committed entries."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("a", T0, T0)
    join.commit()
    join.observe_sent("future", T0 + 10 * MAX_AGE, T0 + 10 * MAX_AGE)
    join.abort()
    join.commit()
    assert join.expired_sent == 0
    assert join.observe_final("a", T0 + 1, T0 + 1) == Latency(1, False)


def test_cap_evicts_oldest_entries_first_and_counts_them() -> None:
    """Over max entries the oldest waiting entries go, each counted as an early eviction."""
    join = LatencyJoin(MAX_AGE, max_entries=3)
    join.observe_sent("oldest", T0, T0)
    join.observe_sent("middle", T0 + 1, T0 + 1)
    join.observe_final("final-only", T0 + 2, T0 + 2)
    join.observe_sent("newest", T0 + SLOT, T0 + SLOT)
    join.commit()
    assert (len(join), join.evicted_early) == (3, 1)
    assert join.observe_final("oldest", T0 + SLOT, T0 + SLOT) is None
    assert join.observe_final("middle", T0 + SLOT, T0 + SLOT) is not None
    assert join.observe_sent("final-only", T0, T0 + SLOT) is not None
    assert join.observe_final("newest", T0 + SLOT, T0 + SLOT) is not None


def test_a_restore_from_the_records_gives_the_same_answers() -> None:
    """Feeding the committed notifications to a fresh join reproduces the live answers."""
    notifications = [
        (f"m{i % 40}", i % 3 == 0, T0 + i * 7 * MINUTE, T0 + i * 7 * MINUTE) for i in range(600)
    ]
    live, rebuilt = LatencyJoin(MAX_AGE), LatencyJoin(MAX_AGE)
    for index, notification in enumerate(notifications[:400]):
        _observe(live, *notification)
        if index % 25 == 24:
            live.commit()
    live.commit()
    for notification in notifications[:400]:
        _observe(rebuilt, *notification)
    rebuilt.commit()
    after = notifications[400:]
    assert [_observe(live, *n) for n in after] == [_observe(rebuilt, *n) for n in after]
    assert (live.expired_sent, live.expired_final) == (rebuilt.expired_sent, rebuilt.expired_final)


@pytest.mark.parametrize(("max_age_ms", "max_entries"), [(0, 10), (HOUR, 0)])
def test_nonsense_bounds_are_refused(max_age_ms: int, max_entries: int) -> None:
    """Bounds that could never hold an entry are a configuration error at start-up."""
    with pytest.raises(ValueError, match="must be at least 1"):
        LatencyJoin(max_age_ms, max_entries)


def test_approx_bytes_tracks_waiting_entries() -> None:
    """The memory gauge grows with the entries waiting."""
    join = LatencyJoin(MAX_AGE)
    empty = join.approx_bytes()
    for i in range(1_000):
        join.observe_sent(f"m{i}", T0 + i, T0 + i)
    join.commit()
    assert 100 < (join.approx_bytes() - empty) / len(join) < 400


@settings(max_examples=200, database=None, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.integers(0, 19), st.booleans()), max_size=60).map(
        lambda legs: list(dict.fromkeys(legs))  # each (message, leg) arrives once
    ),
    final_after_ms=st.integers(-5_000, 60 * MINUTE),
)
def test_any_arrival_order_pairs_each_message_once(
    arrivals: list[tuple[int, bool]], final_after_ms: int
) -> None:
    """Whatever the interleaving, each message with both legs gets exactly one true latency."""
    join = LatencyJoin(MAX_AGE)
    latencies: dict[int, list[Latency]] = {}
    legs_seen: dict[int, set[bool]] = {}
    for position, (message, is_sent) in enumerate(arrivals):
        sent_ms = T0 + message * MINUTE
        occurred_ms = sent_ms if is_sent else sent_ms + final_after_ms
        found = _observe(join, f"m{message}", is_sent, occurred_ms, T0 + position)
        if found is not None:
            latencies.setdefault(message, []).append(found)
        legs_seen.setdefault(message, set()).add(is_sent)
        if position % 7 == 0:
            join.commit()
    for message, legs in legs_seen.items():
        if legs == {True, False}:
            (latency,) = latencies[message]
            final_first = arrivals.index((message, False)) < arrivals.index((message, True))
            assert latency == Latency(final_after_ms, final_first)
        else:
            assert message not in latencies


def _observe(
    join: LatencyJoin, tracking_id: str, is_sent: bool, occurred_ms: int, received_ms: int
) -> Latency | None:
    if is_sent:
        return join.observe_sent(tracking_id, occurred_ms, received_ms)
    return join.observe_final(tracking_id, occurred_ms, received_ms)


Step = tuple[str, int, bool, int, int]  # ("observe", message, is_sent, occurred, received)


@st.composite
def histories(draw: st.DrawFn) -> list[Step | tuple[str]]:
    """Observations with out-of-order receive times over more than the max age, with commits
    and aborts between them."""
    steps: list[Step | tuple[str]] = []
    received = T0
    for _ in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from(["observe"] * 6 + ["commit", "abort"]))
        if kind == "observe":
            received += draw(st.integers(-MINUTE, 3 * HOUR))
            message = draw(st.integers(0, 12))
            occurred = received + draw(st.integers(-MINUTE, MINUTE))
            steps.append(("observe", message, draw(st.booleans()), occurred, received))
        else:
            steps.append((kind,))
    return steps


@settings(max_examples=300, database=None, deadline=None)
@given(history=histories(), probes=st.lists(st.tuples(st.integers(0, 12), st.booleans())))
def test_a_join_rebuilt_from_its_deltas_answers_as_the_original(
    history: list[Step | tuple[str]], probes: list[tuple[int, bool]]
) -> None:
    """The changelog holds each committed batch's delta; applying them in order (through their
    bytes) to a fresh join gives one that answers every later observation as the original
    would, and a snapshot of it rebuilds the same again."""
    original = LatencyJoin(MAX_AGE)
    rebuilt = LatencyJoin(MAX_AGE)
    for step in history:
        if step[0] == "observe":
            _, message, is_sent, occurred, received = step  # type: ignore[misc]
            _observe(original, f"m{message}", is_sent, occurred, received)
        elif step[0] == "commit":
            rebuilt.apply_delta(LatencyDelta.decode(original.pending_delta().encode()))
            rebuilt.commit()
            original.commit()
        else:
            original.abort()
    original.abort()  # what was not committed is not in the changelog either
    from_snapshot = LatencyJoin(MAX_AGE)
    from_snapshot.apply_delta(LatencyDelta.decode(rebuilt.snapshot().encode()))
    from_snapshot.commit()
    # The same entries; their order within a slot may differ (an abort puts an entry back at
    # the end), which only the max_entries cap would notice (documented as not deterministic).
    states = [sorted(join.snapshot().ops) for join in (original, rebuilt, from_snapshot)]
    assert states[0] == states[1] == states[2]
    received = max((step[4] for step in history if step[0] == "observe"), default=T0)  # type: ignore[misc]
    answers = [
        [_observe(join, f"m{m}", s, received + n, received + n) for n, (m, s) in enumerate(probes)]
        for join in (original, rebuilt, from_snapshot)
    ]
    assert answers[0] == answers[1] == answers[2]


def test_a_delta_of_another_format_or_truncated_is_refused() -> None:
    """A changelog record this version cannot read is an error, never a guess."""
    join = LatencyJoin(MAX_AGE)
    join.observe_sent("m1", T0, T0)
    data = join.pending_delta().encode()
    with pytest.raises(ValueError, match="format"):
        LatencyDelta.decode(b"\x09" + data[1:])
    with pytest.raises(ValueError, match="truncated"):
        LatencyDelta.decode(data[:-3])


def test_a_message_paired_within_one_batch_leaves_nothing_in_its_delta() -> None:
    """Both legs of a message in one batch change nothing that outlives the batch, so the
    batch's delta carries neither (a rebuild has less to read); a leg still waiting, or one
    taken from an earlier batch, is in it."""
    join = LatencyJoin(MAX_AGE)
    join.observe_final("earlier", T0, T0)
    join.commit()
    join.observe_sent("paired", T0, T0)
    join.observe_sent("waits", T0 + 1, T0 + 1)
    join.observe_final("paired", T0 + 2, T0 + 2)
    join.observe_sent("earlier", T0 + 3, T0 + 3)
    ops = join.pending_delta().ops
    assert [(op, tracking_id) for op, _, tracking_id, _ in ops] == [
        (WAIT_SENT, "waits"),
        (TAKE_FINAL, "earlier"),
    ]
