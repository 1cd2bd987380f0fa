"""The provider's retry rules, played against a scripted server on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from simulator.connection import Connection, Exchange, Target
from simulator.delivery import Policy, Run, deliver
from simulator.mix import JSON, Postback
from tests.unit.simulator.scripted_server import HANG_UP, SILENT, ScriptedServer, gaps, in_turn

DELAY = 0.15  # retry delay in these tests: short, yet well above scheduling noise


def postbacks(count: int) -> list[Postback]:
    return [
        Postback("SMS_MT/N201", "v2_json", "sent", f"T{n}", b'{"n":%d}' % n, JSON)
        for n in range(count)
    ]


async def send(
    server: ScriptedServer,
    items: list[Postback],
    policy: Policy,
    *,
    seed: int = 0,
    max_duration: float | None = None,
) -> Run:
    connection = Connection(Target.parse(server.url))
    try:
        return await deliver(items, connection, policy, seed=seed, max_duration=max_duration)
    finally:
        await connection.close()


async def test_a_refused_postback_is_retried_after_the_delay_until_it_is_acked() -> None:
    """A 503 is not the end: the postback comes back retry-delay later until it gets a 200."""
    async with ScriptedServer(in_turn(503, 503, 200)) as server:
        run = await send(server, postbacks(1), Policy(retry_delay=DELAY, max_retries=5))
    [delivery] = run.deliveries
    assert delivery.fate == "acked"
    assert delivery.attempts == 3
    assert run.retries == 2
    assert run.statuses == Counter({503: 2, 200: 1})
    assert len(server.requests) == 3
    assert all(gap >= DELAY for gap in gaps([request.at for request in server.requests]))


async def test_an_unanswered_postback_times_out_and_is_retried_on_a_new_connection() -> None:
    """A server that does not answer within the deadline gets the postback again later."""
    async with ScriptedServer(in_turn(SILENT, 200)) as server:
        run = await send(server, postbacks(1), Policy(answer_timeout=0.2, retry_delay=DELAY))
    [delivery] = run.deliveries
    assert delivery.fate == "acked"
    assert run.failures == Counter({"timeout": 1})
    assert run.statuses == Counter({200: 1})
    assert server.connections == 2  # the timed-out connection is never reused
    assert server.bodies() == [delivery.postback.body] * 2
    # The retry waits out the delay after the failed attempt, which lasted the full timeout.
    assert gaps([request.at for request in server.requests])[0] >= DELAY
    assert run.elapsed >= 0.2 + DELAY - 0.001  # an asyncio timer may fire a hair early


async def test_a_postback_is_given_up_after_max_retries() -> None:
    """The provider stops after its last retry; the report counts and lists the postback."""
    async with ScriptedServer(in_turn(then=500)) as server:
        run = await send(server, postbacks(2), Policy(retry_delay=0.01, max_retries=3))
    assert [delivery.fate for delivery in run.deliveries] == ["given_up", "given_up"]
    assert [delivery.attempts for delivery in run.deliveries] == [4, 4]
    assert len(server.requests) == 8
    assert run.deliveries[0].last == "500"


async def test_no_retries_means_one_attempt() -> None:
    """--max-retries 0 gives up on the first failure."""
    async with ScriptedServer(in_turn(503)) as server:
        run = await send(server, postbacks(2), Policy(retry_delay=0.0, max_retries=0))
    assert [delivery.fate for delivery in run.deliveries] == ["given_up", "acked"]
    assert len(server.requests) == 2


async def test_a_dropped_answer_makes_an_acked_postback_come_back() -> None:
    """With every 200 'lost', the server gets the same stored postback max-retries more times."""
    async with ScriptedServer() as server:
        run = await send(
            server, postbacks(1), Policy(retry_delay=0.01, max_retries=2, drop_answers=1.0)
        )
    [delivery] = run.deliveries
    assert server.bodies() == [delivery.postback.body] * 3
    assert run.statuses == Counter({200: 3})
    assert (delivery.fate, delivery.oks, run.dropped) == ("given_up", 3, 3)


async def test_some_dropped_answers_mean_duplicates_of_acked_postbacks() -> None:
    """--drop-answers P resends a share of postbacks the server had already answered 200."""
    items = postbacks(40)
    async with ScriptedServer() as server:
        run = await send(
            server, items, Policy(retry_delay=0.01, max_retries=10, drop_answers=0.3), seed=4
        )
    received = Counter(server.bodies())
    assert all(delivery.fate == "acked" for delivery in run.deliveries)
    assert set(received) == {item.body for item in items}
    resent = sum(times - 1 for times in received.values())
    assert resent == run.dropped > 0
    assert run.retries == run.dropped


async def test_dropped_answers_are_reproducible_from_the_seed_whatever_the_timing() -> None:
    """The same seed loses the same answers, even when retries interleave differently."""
    outcomes = []
    for delay in (0.0, 0.02):  # retries go out at other points among fresh postbacks
        policy = Policy(retry_delay=delay, max_retries=20, drop_answers=0.5)
        async with ScriptedServer() as server:
            run = await send(server, postbacks(30), policy, seed=99)
        outcomes.append([delivery.attempts for delivery in run.deliveries])
    assert outcomes[0] == outcomes[1]
    assert max(outcomes[0]) > 1
    async with ScriptedServer() as server:
        other = await send(server, postbacks(30), policy, seed=100)
    assert [delivery.attempts for delivery in other.deliveries] != outcomes[0]


async def test_other_postbacks_go_out_while_one_waits_for_its_retry() -> None:
    """A refused postback does not block the queue: the rest are sent in the meantime."""
    items = postbacks(3)
    async with ScriptedServer(in_turn(503)) as server:
        await send(server, items, Policy(retry_delay=1.0))  # far longer than two postbacks
    assert server.bodies() == [items[0].body, items[1].body, items[2].body, items[0].body]
    assert server.connections == 1  # one keep-alive connection throughout


async def test_an_unreachable_url_is_retried_then_given_up() -> None:
    """Refused connections count as failed attempts, like the provider's own."""
    async with ScriptedServer() as server:
        url = server.url
    connection = Connection(Target.parse(url))
    run = await deliver(postbacks(1), connection, Policy(retry_delay=0.0, max_retries=1))
    assert run.failures == Counter({"connection": 2})
    assert run.deliveries[0].fate == "given_up"


async def test_a_hang_up_without_answer_is_a_failed_attempt() -> None:
    """A server that closes the connection instead of answering gets the postback again."""
    async with ScriptedServer(in_turn(HANG_UP)) as server:
        run = await send(server, postbacks(1), Policy(retry_delay=0.01))
    assert run.deliveries[0].fate == "acked"
    assert run.failures == Counter({"connection": 1})


async def test_max_duration_stops_the_run_and_reports_the_rest_abandoned() -> None:
    """A run is bounded in time: what is still waiting when it ends is reported, not lost."""
    async with ScriptedServer(in_turn(then=503)) as server:
        run = await send(
            server, postbacks(2), Policy(retry_delay=30.0, max_retries=5), max_duration=0.3
        )
    assert run.stopped
    assert [delivery.fate for delivery in run.deliveries] == ["abandoned", "abandoned"]
    assert run.elapsed < 5
    assert run.waiting > 0


async def test_a_drained_run_sends_no_fresh_postback_but_every_retry_it_owes() -> None:
    """Draining stops new traffic at once, yet a postback already refused still gets its
    retries: the provider keeps what it owes, which is what a fault drill's tail relies on."""
    drain = asyncio.Event()

    class DrainAfterFirst:
        def __init__(self, inner: Connection) -> None:
            self.inner = inner

        async def post(self, body: bytes, content_type: str, answer_timeout: float) -> Exchange:
            exchange = await self.inner.post(body, content_type, answer_timeout)
            drain.set()
            return exchange

    async with ScriptedServer(in_turn(503, then=200)) as server:
        connection = Connection(Target.parse(server.url))
        try:
            run = await deliver(
                postbacks(3),
                DrainAfterFirst(connection),
                Policy(retry_delay=DELAY, max_retries=5),
                drain=drain,
            )
        finally:
            await connection.close()
    assert [delivery.fate for delivery in run.deliveries] == ["acked", "abandoned", "abandoned"]
    assert run.deliveries[0].attempts == 2
    assert [delivery.attempts for delivery in run.deliveries[1:]] == [0, 0]
    assert not run.stopped


@pytest.mark.parametrize(
    "bad",
    [{"answer_timeout": 0}, {"retry_delay": -1}, {"max_retries": -1}, {"drop_answers": 2}],
)
def test_impossible_policies_are_refused(bad: dict[str, float]) -> None:
    """A policy that cannot describe the provider fails at once."""
    with pytest.raises(ValueError, match="must be"):
        Policy(**bad)  # type: ignore[arg-type]  # one float or int per case, by design
