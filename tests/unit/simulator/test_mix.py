"""The simulated provider's traffic: reproducible, realistic in shape, honest about its shares."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.processor.parse import Unparseable, parse
from simulator.mix import JSON, MALFORMED_SHAPES, XML, MixSpec, Postback, generate

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SENT_CODES = {"MMS_MT": "N101", "SMS_MT": "N201"}


def mix(count: int, seed: int = 7, **shares: float) -> list[Postback]:
    return generate(MixSpec(count=count, seed=seed, start=START, **shares))


def test_the_same_seed_gives_the_same_postbacks_byte_for_byte() -> None:
    """A run can be reproduced from the seed in its report."""
    assert mix(500, seed=11) == mix(500, seed=11)
    assert [p.body for p in mix(500, seed=11)] != [p.body for p in mix(500, seed=12)]


def test_different_seeds_never_share_a_tracking_id() -> None:
    """Two runs against one pipeline are distinct notifications, not each other's retries."""
    first = {p.tracking_id for p in mix(1000, seed=1)} - {None}
    second = {p.tracking_id for p in mix(1000, seed=2)} - {None}
    assert first
    assert second
    assert not first & second


@pytest.mark.parametrize("count", [1, 2, 3, 17, 1000])
def test_exactly_count_postbacks_are_generated(count: int) -> None:
    """--count is the number of distinct postbacks sent, before retries."""
    assert len(mix(count)) == count


def test_shares_of_xml_and_malformed_bodies_are_respected() -> None:
    """--xml-share and --malformed-share shape the mix as asked, within sampling noise."""
    postbacks = mix(6000, seed=3, xml_share=0.3, malformed_share=0.05)
    wires = Counter(p.wire for p in postbacks)
    assert wires["malformed"] / len(postbacks) == pytest.approx(0.05, abs=0.012)
    well_formed = wires["v2_json"] + wires["v1_xml"]
    assert wires["v1_xml"] / well_formed == pytest.approx(0.3, abs=0.04)


@pytest.mark.parametrize(
    ("xml_share", "malformed_share", "expected_wires"),
    [
        (0.0, 0.0, {"v2_json"}),
        (1.0, 0.0, {"v1_xml"}),
        (0.5, 1.0, {"malformed"}),
    ],
)
def test_extreme_shares_are_exact(
    xml_share: float, malformed_share: float, expected_wires: set[str]
) -> None:
    """A share of 0 means none and 1 means all, so a test run can isolate one format."""
    postbacks = mix(300, xml_share=xml_share, malformed_share=malformed_share)
    assert {p.wire for p in postbacks} == expected_wires


def test_sent_and_final_postbacks_of_a_message_share_its_tracking_id() -> None:
    """A delivery report's final postback follows its sent one under the same tracking id."""
    postbacks = mix(3000, seed=5, xml_share=0.3)
    by_id: dict[str, list[tuple[int, Postback]]] = defaultdict(list)
    for index, postback in enumerate(postbacks):
        if postback.tracking_id is not None and postback.wire != "malformed":
            by_id[postback.tracking_id].append((index, postback))
    pairs = 0
    for tracking_id, legs in by_id.items():
        origin = legs[0][1].kind.split("/")[0]
        if origin in SENT_CODES:
            assert legs[0][1].kind == f"{origin}/{SENT_CODES[origin]}", tracking_id
            assert legs[0][1].stage == "sent"
            assert len(legs) <= 2, tracking_id
            if len(legs) == 2:
                (_, sent), (_, final) = legs
                assert final.stage == "final"
                assert final.kind.split("/")[0] == origin
                assert final.wire == sent.wire  # a message is one API version
                pairs += 1
        else:
            assert [leg.stage for _, leg in legs] == ["inbound"], tracking_id
    mt_messages = sum(1 for legs in by_id.values() if legs[0][1].stage == "sent")
    assert pairs / mt_messages > 0.75  # carriers return most receipts; some never come


def test_the_mix_holds_every_kind_the_pipeline_must_handle() -> None:
    """A run exercises MT pairs, both MO kinds, both formats and every malformed shape."""
    postbacks = mix(8000, seed=9, xml_share=0.2, malformed_share=0.05)
    kinds = {p.kind for p in postbacks}
    assert {"MMS_MT/N101", "MMS_MT/N102", "SMS_MT/N201", "SMS_MT/N202"} <= kinds
    assert {"SMS_MO/N211", "MMS_MO/N401"} <= kinds
    assert {"MMS_MT/N103", "MMS_MT/E101", "SMS_MT/E201"} <= kinds  # failures happen too
    assert {f"malformed/{shape}" for shape in MALFORMED_SHAPES} <= kinds
    assert {(p.kind.split("/")[0], p.wire) for p in postbacks if p.wire != "malformed"} >= {
        (origin, wire)
        for origin in ("MMS_MT", "SMS_MT", "SMS_MO", "MMS_MO")
        for wire in ("v2_json", "v1_xml")
    }


def test_the_processor_parses_every_well_formed_body_and_refuses_every_malformed_one() -> None:
    """Malformed means dead-lettered by the real parser; everything else becomes an event."""
    for postback in mix(4000, seed=13, xml_share=0.3, malformed_share=0.1):
        if postback.wire == "malformed":
            with pytest.raises(Unparseable):
                parse(postback.body, postback.content_type)
            if postback.tracking_id is not None:  # the id the events check looks out for
                assert postback.tracking_id.startswith("BAD")
                assert postback.tracking_id.encode() in postback.body
            continue
        notification = parse(postback.body, postback.content_type)
        assert postback.kind.startswith(f"{notification.origin}/"), postback.kind
        assert notification.fields.get("tracking-id") == postback.tracking_id
        assert postback.kind.endswith(f"/{notification.code}"), postback.kind
        assert notification.input_format == ("xml_v1" if postback.wire == "v1_xml" else "json_v2")


def test_content_type_follows_the_body_format() -> None:
    """The edge records the Content-Type; JSON and XML bodies are labelled as such."""
    for postback in mix(1000, xml_share=0.5, malformed_share=0.0):
        assert postback.content_type == (XML if postback.wire == "v1_xml" else JSON)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**31), count=st.integers(1, 120))
def test_any_seed_gives_count_postbacks_with_finals_after_their_sent(seed: int, count: int) -> None:
    """Whatever the seed, no final postback precedes the sent one of its message."""
    postbacks = generate(MixSpec(count=count, seed=seed, malformed_share=0.1, xml_share=0.5))
    assert len(postbacks) == count
    sent_ids: set[str] = set()
    for postback in postbacks:
        if postback.stage == "sent":
            assert postback.tracking_id not in sent_ids
            assert postback.tracking_id is not None
            sent_ids.add(postback.tracking_id)
        elif postback.stage == "final":
            assert postback.tracking_id in sent_ids


@pytest.mark.parametrize(
    "bad",
    [
        {"count": 0},
        {"xml_share": 1.5},
        {"malformed_share": -0.1},
        {"start": datetime(2025, 1, 1)},  # a naive time: no zone
    ],
)
def test_impossible_specs_are_refused(bad: dict[str, object]) -> None:
    """Nonsense settings fail at once with a message, not halfway through a run."""
    arguments: dict[str, object] = {"count": 10, "seed": 1, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        MixSpec(**arguments)  # type: ignore[arg-type]  # the dict holds mixed value types
