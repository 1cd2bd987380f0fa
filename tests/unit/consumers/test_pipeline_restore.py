"""A rebuilt state answers exactly as the state of the instance that processed.

The runtime rebuilds a partition's dedupe window and latency join from the state topic (the
changes each committed batch wrote: `pending_state`, applied with `apply_state`) or, when that
cannot serve, by feeding re-read raw records to `PartitionPipeline.restore`, which skips
enrichment. If either changed the state in any way `process` does not, a retry after a
rebalance could be emitted again or a latency lost.
"""

from __future__ import annotations

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import Outcome, PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.state import StateDelta, in_parts
from consumers.processor.window import DedupeWindow
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from testkit.kafka_tools import ProducerRecord
from testkit.samples import all_malformed, all_valid
from testkit.traffic import as_raw, delivery_reports, with_retries

T0_MS = 1_709_648_570_000
MINUTE_MS = 60_000


def new_pipeline(identity: Identity | None = None) -> PartitionPipeline:
    return PartitionPipeline(
        "postbacks.raw",
        0,
        identity=identity or Identity(),
        window=DedupeWindow(),
        latency=LatencyJoin(max_age_ms=2 * 60 * MINUTE_MS),
        privacy=Privacy(DEVELOPMENT_PSEUDONYM_KEY.encode(), include_content=False),
    )


def feed(
    pipeline: PartitionPipeline,
    records: list[ProducerRecord],
    first_offset: int,
    *,
    how: str,
    changes: list[bytes] | None = None,
) -> list[Outcome]:
    """Process (or restore) `records`, committing every 37; `changes` collects the encoded
    state change of each commit, as the runtime writes it to the state topic."""

    def commit() -> None:
        if changes is not None:
            changes.append(pipeline.pending_state().encode())
        pipeline.commit()

    outcomes = []
    for n, (_, value, headers, timestamp) in enumerate(records):
        offset = first_offset + n
        if how == "process":
            outcomes.append(pipeline.process(value, offset, headers, timestamp or 0))
        else:
            pipeline.restore(value, offset, headers, timestamp or 0)
        if n % 37 == 36:
            commit()
    commit()
    return outcomes


def assert_same_after(
    before: list[ProducerRecord], after: list[ProducerRecord], identity: Identity | None = None
) -> None:
    live, rebuilt = new_pipeline(identity), new_pipeline(identity)
    changes: list[bytes] = []
    feed(live, before, 0, how="process", changes=changes)
    feed(rebuilt, before, 0, how="restore")
    from_state = new_pipeline(identity)
    for change in changes:
        from_state.apply_state(StateDelta.decode(change))
    sizes = [(len(p.window), len(p.latency)) for p in (live, rebuilt, from_state)]
    assert sizes[0] == sizes[1] == sizes[2]
    live_answers = feed(live, after, len(before), how="process")
    rebuilt_answers = feed(rebuilt, after, len(before), how="process")
    state_answers = feed(from_state, after, len(before), how="process")
    assert rebuilt_answers == live_answers
    assert state_answers == live_answers


def test_a_state_rebuilt_from_a_snapshot_in_parts_answers_as_the_live_one() -> None:
    """After a rebuild from raw the runtime writes the whole state as a snapshot, cut in
    records of bounded size; applied in order, the parts give the same state again."""
    before, after = split_messages(2000, seed=6)
    first = as_raw(with_retries(before, 0.1, seed=2), T0_MS, step_ms=1000)
    second = as_raw(with_retries(after, 0.1, seed=3), T0_MS + 3000 * 1000, step_ms=1000)
    live = new_pipeline()
    feed(live, first, 0, how="process")
    parts = in_parts(live.snapshot(), max_bytes=4096)
    assert len(parts) > 5  # really cut in parts
    rebuilt = new_pipeline()
    feed(rebuilt, as_raw(delivery_reports(300, seed=9), T0_MS), 0, how="process")  # replaced
    for part in parts:
        rebuilt.apply_state(StateDelta.decode(part.encode()))
    assert feed(rebuilt, second, len(first), how="process") == feed(
        live, second, len(first), how="process"
    )


def split_messages(count: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Sent/final pairs cut in two: some sents before the cut, their finals after, and some
    finals before the cut whose sents come after (the provider retried the sent)."""
    bodies = delivery_reports(count, seed)
    sents, finals = bodies[0::2], bodies[1::2]
    half = len(sents) // 2
    before = sents[:half] + finals[half:]
    after = finals[:half] + sents[half:]
    return before, after


def test_a_rebuilt_state_pairs_latencies_and_drops_retries_as_the_live_one() -> None:
    before, after = split_messages(400, seed=5)
    samples = [body for _, body in all_valid()] + [body for _, body in all_malformed()]
    before = with_retries(before + samples, 0.2, seed=3)
    after = with_retries(after + with_retries(before, 0.3, seed=4)[len(before) :], 0.1)
    first = as_raw(before, T0_MS, step_ms=1000)
    second = as_raw(after, T0_MS + len(before) * 1000 + MINUTE_MS, step_ms=1000)
    assert_same_after(first, second)


def test_a_rebuilt_state_with_a_field_list_identity_answers_as_the_live_one() -> None:
    before, after = split_messages(100, seed=8)
    identity = Identity.from_fields(("origin", "tracking-id", "code", "status"))
    assert_same_after(as_raw(before, T0_MS), as_raw(after + before, T0_MS + MINUTE_MS), identity)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=12))
odd_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)


def mostly(*values: object) -> st.SearchStrategy[object]:
    """One of `values` nine times in ten, otherwise a value of any odd shape."""
    return st.one_of(*[st.sampled_from(values)] * 9, odd_values)


mt_bodies = st.fixed_dictionaries(
    {
        "origin": mostly("SMS_MT", "MMS_MT", "SMS_MO"),
        "code": mostly("N101", "N201", "N102", "N202", "E202", "E102", "N103", "X9"),
        "tracking-id": mostly("a", "b", 7),
    },
    optional={
        "status": mostly("Sent", "Delivered", "Message Sent/Expired"),
        "status-details": mostly("Message Sent", "Message Sent/Rejected", "Undelivered"),
        "timestamp": mostly("2024-03-05T14:22:47Z", "2024-03-05T09:22:47-05:00", "bad"),
    },
).map(orjson.dumps)


SENT_IN_DETAILS = orjson.dumps(
    {"origin": "SMS_MT", "code": "E202", "tracking-id": "a", "status-details": "Message Sent"}
)
ITS_FINAL = orjson.dumps({"origin": "SMS_MT", "code": "N202", "tracking-id": "a"})


@settings(max_examples=300, deadline=None)
@example([SENT_IN_DETAILS], [ITS_FINAL])  # the outcome read from status-details alone
@given(st.lists(mt_bodies, min_size=1, max_size=12), st.lists(mt_bodies, max_size=12))
def test_any_bodies_rebuild_the_same_state(before: list[bytes], after: list[bytes]) -> None:
    """Odd shapes too: ids as numbers or objects, status only in details, bad timestamps."""
    first = as_raw(before, T0_MS, step_ms=7000)
    second = as_raw(after + before, T0_MS + 10 * MINUTE_MS, step_ms=7000)
    assert_same_after(first, second)
