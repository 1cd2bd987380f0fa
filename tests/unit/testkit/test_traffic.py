"""The generated provider traffic: retries where the provider would send them, same per seed."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from testkit.traffic import with_retries

bodies_lists = st.lists(st.binary(min_size=0, max_size=2), max_size=80)  # small: many equal
ratios = st.sampled_from([0.0, 0.1, 0.5, 1.0])
seeds = st.integers(min_value=0, max_value=2**32)


def inserted_into_a_list(bodies: list[bytes], ratio: float, seed: int) -> list[bytes]:
    """The first, quadratic version: every retry inserted into a list after the body's first
    copy. Kept as the definition the fast version must reproduce."""
    rng = random.Random(seed)
    stream = list(bodies)
    for body in rng.sample(bodies, int(len(bodies) * ratio)):
        stream.insert(rng.randrange(stream.index(body) + 1, len(stream) + 1), body)
    return stream


@given(bodies_lists, ratios, seeds)
def test_a_seed_gives_the_stream_the_list_insertion_gave(
    bodies: list[bytes], ratio: float, seed: int
) -> None:
    """A seed yields the same stream as before the rewrite, so benchmark inputs stay the same."""
    assert with_retries(bodies, ratio, seed) == inserted_into_a_list(bodies, ratio, seed)


@given(bodies_lists, ratios, seeds)
def test_every_body_comes_once_in_order_and_retries_come_after_it(
    bodies: list[bytes], ratio: float, seed: int
) -> None:
    """Each body is sent in order, and `ratio` of them again, each after the body's first copy."""
    stream = with_retries(bodies, ratio, seed)

    assert len(stream) == len(bodies) + int(len(bodies) * ratio)
    assert Counter(stream) >= Counter(bodies)
    seen: set[bytes] = set()
    originals = iter(bodies)
    expected = next(originals, None)
    for body in stream:
        if body == expected:
            seen.add(body)
            expected = next(originals, None)
        else:
            assert body in seen, "a retry came before its body"
    assert expected is None, "a body was never sent"
