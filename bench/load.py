"""Postbacks sent at a pace, through the edge or straight into Kafka as the edge writes them,
and watched until they are readable downstream: what B3's latency probe, B4 and B5 send."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from bench.support import PARTITIONS, READER_FETCH_WAIT_MS, poll
from ingest.records import RawRecord, build_record
from simulator.connection import Connection, Target
from simulator.mix import MixSpec, Postback, generate
from testkit.kafka_tools import ProducerRecord

ANSWER_TIMEOUT_S: Final = 10.0  # the provider's: a slower answer counts as a failure
# A paced sending stops taking new postbacks this late (x its schedule, + 1 s) when it cannot
# keep up, so that a slow machine bounds the run instead of stretching it.
SEND_CUTOFF_FACTOR: Final = 1.5
DRAIN_TIMEOUT_S: Final = 15.0  # after a segment's last ack, wait at most this for its records
USER_AGENT: Final = b"bench-load"


def traffic(count: int, seed: int, xml_share: float, malformed_share: float) -> list[Postback]:
    """`count` realistic postbacks (`simulator.mix`) in sending order, no retries."""
    spec = MixSpec(max(1, count), seed, xml_share=xml_share, malformed_share=malformed_share)
    return generate(spec)


def edge_record(postback: Postback, n: int, received_at_ms: int) -> RawRecord:
    """The raw record the edge writes for this postback, posted from loopback."""
    return build_record(
        postback.body,
        source="mt",
        received_at_ms=received_at_ms,
        client_addr="127.0.0.1",
        request_id=f"bench-{n}",
        content_type=postback.content_type.encode(),
        user_agent=USER_AGENT,
    )


def edge_records(postbacks: Sequence[Postback]) -> list[ProducerRecord]:
    """The raw records the edge would write for these postbacks, received up to now."""
    now_ms = int(time.time() * 1000)
    records = (edge_record(p, n, now_ms - len(postbacks) + n) for n, p in enumerate(postbacks))
    return [(r.key, r.value, r.headers, r.timestamp_ms) for r in records]


def event_key(postback: Postback) -> tuple[str, str] | None:
    """What identifies this postback's event in the event JSON; None without an event. A
    message's sent and final postbacks share a tracking id and differ in code."""
    if postback.stage == "malformed" or postback.tracking_id is None:
        return None
    return postback.tracking_id, postback.kind.split("/", 1)[1]


# -------------------------------------------------------------------------------- sending


@dataclass
class Sent:
    """One paced sending of postbacks: when each was acknowledged, and how the pacing went."""

    acked: dict[int, float] = field(default_factory=dict)  # index -> perf_counter of the ack
    answer_ms: list[float] = field(default_factory=list)  # HTTP: request -> 200
    late_ms: list[float] = field(default_factory=list)  # how late each send left its slot
    failures: Counter[str] = field(default_factory=Counter)
    unsent: int = 0  # not sent by the cutoff
    seconds: float = 0.0  # first send -> last answer


def _cutoff(started: float, count: int, rate: float | None) -> float:
    if rate is None:
        return float("inf")
    return started + SEND_CUTOFF_FACTOR * count / rate + 1.0


async def post_at_rate(
    port: int,
    connections: int,
    postbacks: Sequence[Postback],
    rate: float | None,
    max_seconds: float | None = None,
) -> Sent:
    """Post to the edge over `connections` keep-alive connections, postback n due at n/rate
    (as fast as the connections go when `rate` is None); one request in flight per
    connection. Past the cutoff (or `max_seconds`) the rest are counted as unsent."""
    target = Target.parse(f"http://127.0.0.1:{port}/postbacks/mt")
    sent = Sent()
    order = iter(range(len(postbacks)))  # shared: each connection takes the next one due
    started = time.perf_counter()
    stop_at = _cutoff(started, len(postbacks), rate)
    if max_seconds is not None:
        stop_at = min(stop_at, started + max_seconds)

    async def connection_loop() -> None:
        connection = Connection(target)
        try:
            for n in order:
                if time.perf_counter() > stop_at:
                    sent.unsent += 1
                    continue
                if rate is not None:
                    due = started + n / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent.late_ms.append((time.perf_counter() - due) * 1000)
                postback = postbacks[n]
                exchange = await connection.post(
                    postback.body, postback.content_type, ANSWER_TIMEOUT_S
                )
                if exchange.status == 200:
                    sent.acked[n] = time.perf_counter()
                    sent.answer_ms.append(exchange.seconds * 1000)
                else:
                    sent.failures[str(exchange.status or exchange.failure)] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(connection_loop() for _ in range(connections)))
    sent.seconds = time.perf_counter() - started
    return sent


async def produce_at_rate(
    producer: AIOKafkaProducer, topic: str, postbacks: Sequence[Postback], rate: float
) -> Sent:
    """Raw records as the edge builds them, straight into `topic`, postback n due at n/rate."""
    sent = Sent()

    def on_ack(n: int, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            sent.failures["produce"] += 1
        else:
            sent.acked[n] = time.perf_counter()

    started = time.perf_counter()
    stop_at = _cutoff(started, len(postbacks), rate)
    for n, postback in enumerate(postbacks):
        if time.perf_counter() > stop_at:
            sent.unsent += len(postbacks) - n
            break
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.late_ms.append((time.perf_counter() - due) * 1000)
        record = edge_record(postback, n, int(time.time() * 1000))
        delivery = await producer.send(
            topic,
            record.value,
            key=record.key,
            headers=record.headers,
            timestamp_ms=record.timestamp_ms,
        )
        delivery.add_done_callback(partial(on_ack, n))
    await producer.flush()
    sent.seconds = time.perf_counter() - started
    return sent


# -------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Match:
    """How a postback is recognised in a topic: the same key from both sides."""

    of_postback: Callable[[Postback], object]
    of_record: Callable[[ConsumerRecord[bytes, bytes]], object]


def _event_key_of(record: ConsumerRecord[bytes, bytes]) -> object:
    try:
        event = orjson.loads(record.value)
        return (event["tracking_id"], event["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


BY_EVENT: Final = Match(event_key, _event_key_of)  # an events topic
BY_BODY: Final = Match(lambda postback: postback.body, lambda record: record.value)  # raw copies


class Watcher:
    """Reads a topic from its current end and notes when each expected record is readable.

    `expect` starts a new segment: records matching one of its postbacks get the
    perf_counter of the fetch that returned them, under the postback's index; anything else
    (an earlier segment's straggler, a dead letter) is ignored.
    """

    def __init__(self, bootstrap: str, topic: str, isolation: str, match: Match) -> None:
        self._topic = topic
        self._match = match
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level=isolation,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        )
        self._keys: Mapping[object, int] = {}
        self.seen: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [TopicPartition(self._topic, p) for p in range(PARTITIONS)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    def expect(self, postbacks: Sequence[Postback], indexes: Sequence[int]) -> dict[int, float]:
        self._keys = {self._match.of_postback(postbacks[n]): n for n in indexes}
        self.seen = {}
        return self.seen

    async def _read(self) -> None:
        key_of = self._match.of_record
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            keys, seen = self._keys, self.seen
            for batch in batches.values():
                for record in batch:
                    index = keys.get(key_of(record))
                    if index is not None and index not in seen:
                        seen[index] = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


# ------------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One paced sending, and when what was sent became readable."""

    rate: float
    sent: Sent
    count: int
    measured: int  # acknowledged postbacks with an event to time
    latencies_ms: list[float]  # ack -> readable downstream, per matched postback
    via_ms: list[float]  # ack -> readable in the `via` topic (B4: the raw topic), if watched
    cpu_s: dict[str, float]  # per process, over the segment (sending and draining)
    wall_s: float


Send = Callable[[Sequence[Postback], float], Awaitable[Sent]]


async def timed_segment(
    postbacks: Sequence[Postback],
    rate: float,
    send: Send,
    readable: Watcher,
    cpu: Callable[[], dict[str, float]],
    via: Watcher | None = None,
) -> Segment:
    """Send `postbacks` at `rate` and time each one with an event from its ack until
    `readable` saw it (at most DRAIN_TIMEOUT_S after the last ack)."""
    measured = [n for n, postback in enumerate(postbacks) if event_key(postback) is not None]
    seen = readable.expect(postbacks, measured)
    via_seen = via.expect(postbacks, measured) if via is not None else {}
    cpu_before = cpu()
    started = time.perf_counter()
    sent = await send(postbacks, rate)
    wanted = set(measured) & sent.acked.keys()
    await poll(lambda: wanted <= seen.keys(), DRAIN_TIMEOUT_S, every_s=0.02)
    wall = time.perf_counter() - started
    cpu_after = cpu()
    return Segment(
        rate=rate,
        sent=sent,
        count=len(postbacks),
        measured=len(wanted),
        latencies_ms=[(seen[n] - sent.acked[n]) * 1000 for n in wanted if n in seen],
        via_ms=[(via_seen[n] - sent.acked[n]) * 1000 for n in wanted if n in via_seen],
        cpu_s={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
        wall_s=wall,
    )
