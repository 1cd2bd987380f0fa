"""B3: the processor's throughput, restore time and commit-interval latency, each against a
baseline measured in the same run on the same broker.

    python -m bench.processor [--count 100000] [--rounds 2] [--profile]

What is measured, and against what
----------------------------------
- throughput: events/s of the real `ProcessorRuntime` (in this process, default settings but
  its own group, transactional prefix and topics) over one pre-produced raw topic of 6
  partitions, from the moment its consumer is subscribed until the group has committed every
  input record. The same input, read by a fresh group each time, feeds three bare aiokafka
  loops with the runtime's exact loop shape (getmany up to 5,000 records, a transaction per
  ~100 ms or 5,000 records, offsets committed inside it with `send_offsets_to_transaction`):
  - `bare_dedupe`: one transactional producer per raw partition, as the processor has, and a
    per-partition set of blake2b-16 digests of the raw value; the baseline of the targets;
  - `bare_dedupe_single`: the same with one producer (one transaction spans all partitions);
  - `bare_passthrough`: per-partition producers, no dedupe: the ceiling of the loop itself.
  Untimed bare passes over the whole input go first for --warm-up-s (a fresh broker's JIT
  needs them), then rounds alternate the order of the four runs so that drift in machine load
  hits all of them.
  Each run also reports a steady rate (first commit seen -> last), without the start-up.
- pipeline: `PartitionPipeline.process` and the bare dedupe over the same records in memory,
  no Kafka: per-record CPU, which explains most of the gap between processor and baseline.
- restore: after the last round, a fresh runtime in that processor pass's group rebuilds every
  partition's state from the raw topic (its restore histogram and counter), against a bare
  read of the same records, partition after partition as the restore does, hashing each value
  into a set. Bytes per dedupe key come from the processor's own gauges and from
  `bench.state_bench` (the window alone, tracemalloc).
- commit interval: per PROCESSOR_COMMIT_INTERVAL_MS, a runtime on its own topics first drains a
  burst (throughput at that interval); then, idle, it gets raw records at a fixed rate, in
  segments interleaved with the other intervals' runtimes. A record's latency is its produce
  ack -> its event readable by a read_committed consumer (matched by the event's lineage).

Input: distinct notifications, 90% v2 JSON delivery reports (sent/final pairs) and 10% v1 XML
(the repository's v1 samples with unique tracking ids), plus each malformed sample once, then
10% provider retries (`tests.traffic.with_retries`, applied per block of 5,000 so generation
stays linear). Received-at is an hour ago, well inside retention and the dedupe window.
Prints one JSON document; also writes bench/results/processor.json (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import os
import platform
import pstats
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from hashlib import blake2b
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from bench.report import save
from bench.state_bench import window_bytes_per_key
from consumers.instruments import ProcessorMetrics
from consumers.processor.identity import Identity
from consumers.processor.latency import LatencyJoin
from consumers.processor.pipeline import PartitionPipeline
from consumers.processor.privacy import Privacy
from consumers.processor.window import DedupeWindow
from consumers.runtime import ProcessorRuntime
from consumers.settings import ProcessorSettings
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.kafka import broker_or_configured
from tests.kafka_tools import produce
from tests.samples import all_malformed, all_valid
from tests.traffic import RawRecord, as_raw, delivery_reports, hours_ago_ms, with_retries

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "processor.json"
PARTITIONS = 6
RETRY_BLOCK = 5_000
POLL_S = 0.1  # committed-offset polls: 1% resolution on a 10 s pass, little CPU
PASS_TIMEOUT_S = 600
WARM_UP_RECORDS = 2_000
PROBE_FETCH_WAIT_MS = 10  # the probe must not add a long-poll wait of its own
COMMIT_INTERVAL_MS = 100  # the runtime's defaults, mirrored by the bare loops
COMMIT_MAX_RECORDS = 5_000
_XML_TRACKING = re.compile(rb"<(TRACKINGID|tracking-id)>[^<]*</(TRACKINGID|tracking-id)>")


# ------------------------------------------------------------------------------------- input


def xml_reports(count: int, seed: int = 7) -> list[bytes]:
    """`count` distinct v1 XML postbacks: the v1 samples that carry a tracking id, in turn,
    each copy with a tracking id of its own."""
    templates = [body for kind, body in all_valid() if kind.startswith("v1/")]
    templates = [body for body in templates if _XML_TRACKING.search(body)]
    bodies = []
    for n in range(count):
        template = templates[n % len(templates)]
        match = _XML_TRACKING.search(template)
        assert match is not None
        tag = match.group(1)
        tracking = b"<%s>XML%03d%08d</%s>" % (tag, seed, n, tag)
        bodies.append(template[: match.start()] + tracking + template[match.end() :])
    return bodies


def input_bodies(count: int, xml_share: float, retry_ratio: float) -> list[bytes]:
    """About `count` raw bodies in arrival order: JSON with XML interleaved, retries included."""
    distinct = round(count / (1 + retry_ratio))
    xml = xml_reports(round(distinct * xml_share))
    json = delivery_reports(distinct - len(xml))
    every = max(1, len(json) // max(1, len(xml)))
    ordered: list[bytes] = [body for _, body in all_malformed()]
    xml_left = iter(xml)
    for n, body in enumerate(json):
        ordered.append(body)
        if n % every == every - 1:
            ordered.extend(itertools.islice(xml_left, 1))
    ordered.extend(xml_left)
    stream: list[bytes] = []
    for block, start in enumerate(range(0, len(ordered), RETRY_BLOCK)):
        stream.extend(with_retries(ordered[start : start + RETRY_BLOCK], retry_ratio, block))
    return stream


# ------------------------------------------------------------------------------------- kafka


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


class CommitWatcher:
    """A group's committed total on a topic, polled over one admin connection.

    `tests.kafka_tools.committed_total` opens a client per call; at 20 polls a second that
    would take a noticeable share of the CPU the measured loop runs on.
    """

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> CommitWatcher:
        await self._admin.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._admin.close()

    async def committed(self, group: str, topic: str) -> int:
        try:
            offsets = await self._admin.list_consumer_group_offsets(group)
        except KafkaError as error:  # the group's coordinator is still loading: nothing yet
            if not error.retriable:
                raise
            return 0
        return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)

    async def until(self, group: str, topic: str, total: int, started: float) -> Pass:
        """Poll until `group` committed `total` records of `topic`; time from `started`."""
        first: tuple[float, int] | None = None
        while True:
            done = await self.committed(group, topic)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                assert first is not None
                return Pass(total, now - started, total - first[1], now - first[0])
            if now - started > PASS_TIMEOUT_S:
                raise TimeoutError(f"{group} committed {done} of {total} in {PASS_TIMEOUT_S} s")
            await asyncio.sleep(POLL_S)


async def poll(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.01) -> bool:
    """Wait until `condition()` holds (True) or `timeout_s` passed (False). For state that
    offers no event to wait on, such as the runtime's assigned partitions."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if condition():
            return True
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(every_s)


@dataclass(frozen=True)
class Pass:
    """One consumption of the input, start of consumption -> every record committed."""

    records: int
    seconds: float
    steady_records: int  # records committed after the first commit was seen ...
    steady_seconds: float  # ... and the time they took: the rate without start-up

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def steady_rate(self) -> float:
        return self.steady_records / self.steady_seconds if self.steady_seconds > 0 else 0.0


class Runnable(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


async def timed_pass(
    watcher: CommitWatcher, loop: Runnable, group: str, raw: str, total: int
) -> Pass:
    started = time.perf_counter()
    stop = asyncio.Event()
    running = asyncio.create_task(loop.run(stop))
    try:
        return await watcher.until(group, raw, total, started)
    finally:
        stop.set()
        await running


# -------------------------------------------------------------------------------- bare loops


@dataclass
class _Transaction:
    producer: AIOKafkaProducer
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    open: bool = False


class BareLoop:
    """Consume, optionally dedupe on the raw value, pass on, commit offsets in the transaction.

    The runtime's loop without its pipeline: same consumer and producer options, same commit
    policy, transactions of all partitions committed concurrently. With `per_partition` each
    raw partition has its own transactional producer (the runtime's fencing scheme); without,
    one producer's transaction carries every partition.
    """

    def __init__(
        self, bootstrap: str, raw: str, out: str, group: str, *, dedupe: bool, per_partition: bool
    ) -> None:
        self._bootstrap, self._raw, self._out, self._group = bootstrap, raw, out, group
        self._dedupe, self._per_partition = dedupe, per_partition
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._transactions: dict[int, _Transaction] = {}
        self._seen: dict[int, set[bytes]] = {}

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._raw])

    async def _transaction(self, tp: TopicPartition) -> _Transaction:
        key = tp.partition if self._per_partition else -1
        transaction = self._transactions.get(key)
        if transaction is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                transactional_id=f"{self._group}.{key}",
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
                max_batch_size=512 * 1024,  # as the processor's producers
            )
            await producer.start()
            transaction = self._transactions[key] = _Transaction(producer)
        if not transaction.open:
            await transaction.producer.begin_transaction()
            transaction.open = True
        return transaction

    async def run(self, stop: asyncio.Event) -> None:
        interval_s = COMMIT_INTERVAL_MS / 1000
        next_commit = time.monotonic() + interval_s
        uncommitted = 0
        out, dedupe = self._out, self._dedupe
        try:
            while not stop.is_set():
                wait_ms = max(0, int((next_commit - time.monotonic()) * 1000))
                batches = await self._consumer.getmany(
                    timeout_ms=wait_ms, max_records=COMMIT_MAX_RECORDS
                )
                for tp, records in batches.items():
                    transaction = await self._transaction(tp)
                    send = transaction.producer.send
                    seen = self._seen.setdefault(tp.partition, set())
                    for record in records:
                        if dedupe:
                            digest = blake2b(record.value, digest_size=16).digest()
                            if digest in seen:
                                continue
                            seen.add(digest)
                        await send(out, record.value, key=record.key)
                    transaction.offsets[tp] = records[-1].offset + 1
                    uncommitted += len(records)
                if uncommitted >= COMMIT_MAX_RECORDS or time.monotonic() >= next_commit:
                    await self._commit_all()
                    uncommitted = 0
                    next_commit = time.monotonic() + interval_s
        finally:
            await self._commit_all()
            for transaction in self._transactions.values():
                await transaction.producer.stop()
            await self._consumer.stop()

    async def _commit_all(self) -> None:
        await asyncio.gather(*(self._commit(t) for t in self._transactions.values() if t.open))

    async def _commit(self, transaction: _Transaction) -> None:
        await transaction.producer.send_offsets_to_transaction(transaction.offsets, self._group)
        await transaction.producer.commit_transaction()
        transaction.offsets = {}
        transaction.open = False


# ---------------------------------------------------------------------------------- processor


def processor_env(bootstrap: str, name: str, **extra: str) -> dict[str, str]:
    """The processor's environment: defaults, with a group, prefix and topics of its own."""
    run = f"{name}.{uuid.uuid4().hex[:8]}"
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "KAFKA_TOPIC_RAW": f"bench.{run}.raw",
        "KAFKA_TOPIC_EVENTS": f"bench.{run}.events",
        "KAFKA_TOPIC_DLQ": f"bench.{run}.dlq",
        "PROCESSOR_GROUP_ID": f"bench.{run}",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX": f"bench.{run}",
        "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
        **extra,
    }


@contextlib.asynccontextmanager
async def started_runtime(
    env: dict[str, str],
) -> AsyncIterator[tuple[ProcessorRuntime, CollectorRegistry]]:
    """A started (subscribed) runtime; the caller runs it. Its registry is fresh."""
    registry = CollectorRegistry()
    runtime = ProcessorRuntime(ProcessorSettings.from_environ(env), ProcessorMetrics(registry))
    await runtime.start()
    yield runtime, registry


def sample_sum(registry: CollectorRegistry, name: str) -> float:
    """Sum of a metric family's samples called `name`, over every label set."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    )


# ------------------------------------------------------------------------------- throughput


@dataclass
class Throughput:
    passes: dict[str, list[Pass]] = field(default_factory=dict)
    dedupe_bytes: float = 0.0
    dedupe_keys: float = 0.0
    restore: list[dict[str, float]] = field(default_factory=list)
    restore_floor: list[float] = field(default_factory=list)
    counts: list[dict[str, float]] = field(default_factory=list)
    warm_up: list[Pass] = field(default_factory=list)


async def processor_pass(
    watcher: CommitWatcher,
    bootstrap: str,
    raw: str,
    total: int,
    distinct: int,
    result: Throughput,
    restore_in_round: int,
    round_: int,
) -> Pass:
    env = processor_env(bootstrap, f"b3r{round_}", KAFKA_TOPIC_RAW=raw)
    async with started_runtime(env) as (runtime, registry):
        measured = await timed_pass(watcher, runtime, env["PROCESSOR_GROUP_ID"], raw, total)
    counts = {
        name: sample_sum(registry, f"postback_processor_{name}_total")
        for name in ("records_consumed", "events_emitted", "duplicates_dropped", "dead_letters")
    }
    assert counts["events_emitted"] + counts["dead_letters"] == distinct, (counts, distinct)
    # Records handed to the pipeline more than once (the first fetch of a partition can be
    # processed before the assignment callback's seek and then again after it).
    counts["reprocessed"] = counts["records_consumed"] - total
    result.counts.append(counts)
    # Gauges stay at their last commit's values after the runtime stopped.
    result.dedupe_bytes = sample_sum(registry, "postback_processor_dedupe_bytes")
    result.dedupe_keys = sample_sum(registry, "postback_processor_dedupe_keys")
    if round_ == restore_in_round:
        result.restore.append(await restore_pass(env))
        result.restore_floor.append(await bare_restore_rate(bootstrap, raw))
    return measured


async def restore_pass(env: dict[str, str]) -> dict[str, float]:
    """A fresh runtime in the group rebuilds every partition's state from the raw topic."""
    async with started_runtime(env) as (runtime, registry):
        started = time.perf_counter()
        stop = asyncio.Event()
        running = asyncio.create_task(runtime.run(stop))
        try:
            if not await poll(lambda: len(runtime.assigned) == PARTITIONS, PASS_TIMEOUT_S):
                raise TimeoutError("the restoring runtime never owned every partition")
            wall = time.perf_counter() - started
        finally:
            stop.set()
            await running
    # Partitions restore side by side, so their durations overlap: the figure is the wall
    # time until every partition is open (fencing included), not the sum of durations.
    partition_seconds = sample_sum(registry, "postback_processor_restore_duration_seconds_sum")
    records = sample_sum(registry, "postback_processor_restored_records_total")
    return {
        "records": records,
        "seconds": wall,
        "wall_seconds_to_all_assigned": wall,
        "summed_partition_seconds": partition_seconds,
        "records_per_s": records / wall,
    }


async def bare_restore_rate(bootstrap: str, raw: str) -> float:
    """Records/s of re-reading the raw topic as the restore does (read_committed, partition
    after partition, batches of 10,000) and hashing each value into a set: the floor."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(raw, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        started = time.perf_counter()
        records = 0
        for tp in partitions:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            seen: set[bytes] = set()
            while await consumer.position(tp) < ends[tp]:
                batches = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
                for record in batches.get(tp, []):
                    seen.add(blake2b(record.value, digest_size=16).digest())
                    records += 1
        return records / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def throughput(
    bootstrap: str,
    records: list[RawRecord],
    rounds: int,
    warm_up_s: float,
    watcher: CommitWatcher,
) -> Throughput:
    suffix = uuid.uuid4().hex[:8]
    raw = f"bench.b3.{suffix}.raw"
    await create_topics(bootstrap, raw)
    await produce(bootstrap, raw, records)
    total = len(records)
    result = Throughput()
    variants: dict[str, Callable[[int], Awaitable[Pass]]] = {}

    def bare(name: str, *, dedupe: bool, per_partition: bool) -> None:
        async def one(round_: int) -> Pass:
            out, group = f"bench.{name}.{suffix}.{round_}", f"bench.{name}.{suffix}.{round_}"
            await create_topics(bootstrap, out)
            loop = BareLoop(bootstrap, raw, out, group, dedupe=dedupe, per_partition=per_partition)
            await loop.start()
            return await timed_pass(watcher, loop, group, raw, total)

        variants[name] = one

    bare("bare_dedupe", dedupe=True, per_partition=True)
    bare("bare_dedupe_single", dedupe=True, per_partition=False)
    bare("bare_passthrough", dedupe=False, per_partition=True)
    distinct = len({value for _, value, _, _ in records})
    variants["processor"] = partial(
        processor_pass, watcher, bootstrap, raw, total, distinct, result, rounds - 1
    )
    # A fresh broker needs real load before it runs at speed (its JIT): in trial runs six
    # bare passes in a row went from 14,000 to 27,000 records/s while the broker's CPU per
    # pass fell from 3.9 s to 1.2 s. So untimed passes come first, for `warm_up_s` at least.
    started = time.perf_counter()
    while not result.warm_up or time.perf_counter() - started < warm_up_s:
        result.warm_up.append(await variants["bare_dedupe_single"](-1 - len(result.warm_up)))
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            gc.collect()
            result.passes.setdefault(name, []).append(await variants[name](round_))
    return result


async def warm_up(bootstrap: str, records: list[RawRecord], watcher: CommitWatcher) -> None:
    """Untimed passes of a bare loop and the processor over a small topic, so that no measured
    run pays for creating __consumer_offsets and __transaction_state or for first imports."""
    env = processor_env(bootstrap, "warmup")
    raw = env["KAFKA_TOPIC_RAW"]
    await create_topics(bootstrap, raw, f"{raw}.bare")
    await produce(bootstrap, raw, records)
    group = f"{env['PROCESSOR_GROUP_ID']}.bare"
    loop = BareLoop(bootstrap, raw, f"{raw}.bare", group, dedupe=True, per_partition=True)
    await loop.start()
    await timed_pass(watcher, loop, group, raw, len(records))
    async with started_runtime(env) as (runtime, _):
        await timed_pass(watcher, runtime, env["PROCESSOR_GROUP_ID"], raw, len(records))


# -------------------------------------------------------------------------- pipeline alone


def pipeline_alone(records: list[RawRecord], settings: ProcessorSettings) -> dict[str, float]:
    """Per-record CPU of the processor's pipeline and of the bare dedupe, no Kafka at all."""
    pipeline = PartitionPipeline(
        "bench.raw",
        0,
        identity=Identity.from_fields(settings.identity_fields or None),
        window=DedupeWindow(settings.dedupe_window_ms, settings.dedupe_max_keys),
        latency=LatencyJoin(settings.latency_max_age_ms),
        privacy=Privacy.from_settings(settings),
    )
    gc.collect()
    started = time.perf_counter()
    for offset, (_, value, headers, timestamp) in enumerate(records):
        pipeline.process(value, offset, headers, timestamp or 0)
        if offset % COMMIT_MAX_RECORDS == COMMIT_MAX_RECORDS - 1:
            pipeline.commit()
    pipeline.commit()
    pipeline_s = time.perf_counter() - started
    seen: set[bytes] = set()
    started = time.perf_counter()
    for _, value, _, _ in records:
        digest = blake2b(value, digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
    dedupe_s = time.perf_counter() - started
    return {
        "records": len(records),
        "pipeline_us_per_record": pipeline_s / len(records) * 1e6,
        "bare_dedupe_us_per_record": dedupe_s / len(records) * 1e6,
    }


# ----------------------------------------------------------------------- commit interval


@dataclass
class IntervalRun:
    """A runtime at one commit interval, on topics of its own, running until the phase ends."""

    interval_ms: int
    env: dict[str, str]
    registry: CollectorRegistry
    stop: asyncio.Event
    running: asyncio.Task[None]
    burst: Pass | None = None
    latencies: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    """One probe segment: figures a segment can have on its own."""

    sent_rate: float
    records: int
    matched: int
    p50_ms: float
    p99_ms: float
    seconds: float
    transactions: float
    transaction_seconds: float  # summed over the segment's committed transactions
    cpu_seconds: float  # this whole process: runtime, probe producer and reader


async def commit_intervals(
    bootstrap: str,
    watcher: CommitWatcher,
    intervals: list[int],
    burst: list[RawRecord],
    rate: float,
    seconds: float,
    rounds: int,
) -> list[dict[str, Any]]:
    """Per commit interval: a burst drained (throughput), then latency probes, the intervals'
    probe segments interleaved round by round so that a change in machine load lands on all."""
    runs: list[IntervalRun] = []
    try:
        for interval_ms in intervals:
            env = processor_env(
                bootstrap, f"lat{interval_ms}", PROCESSOR_COMMIT_INTERVAL_MS=str(interval_ms)
            )
            raw = env["KAFKA_TOPIC_RAW"]
            await create_topics(bootstrap, raw)
            await produce(bootstrap, raw, burst)
            registry = CollectorRegistry()
            runtime = ProcessorRuntime(
                ProcessorSettings.from_environ(env), ProcessorMetrics(registry)
            )
            await runtime.start()
            gc.collect()
            started = time.perf_counter()
            stop = asyncio.Event()
            run = IntervalRun(
                interval_ms, env, registry, stop, asyncio.create_task(runtime.run(stop))
            )
            runs.append(run)
            run.burst = await watcher.until(env["PROCESSOR_GROUP_ID"], raw, len(burst), started)
        for round_ in range(rounds):
            for run in runs if round_ % 2 == 0 else runs[::-1]:
                await asyncio.sleep(0.5)  # idle: no transaction open, commit timer ticking
                segment, latencies = await probe_latency(
                    bootstrap, run, rate, seconds / rounds, seed=900 + round_
                )
                run.segments.append(segment)
                run.latencies.extend(latencies)
    finally:
        for run in runs:
            run.stop.set()
        await asyncio.gather(*(run.running for run in runs))
    return [interval_report(run, runs) for run in runs]


def interval_report(run: IntervalRun, runs: list[IntervalRun]) -> dict[str, Any]:
    assert run.burst is not None
    segments = run.segments
    seconds = sum(s.seconds for s in segments)
    transactions = sum(s.transactions for s in segments)
    reference = next((r for r in runs if r.interval_ms == COMMIT_INTERVAL_MS), None)
    report: dict[str, Any] = {
        "commit_interval_ms": run.interval_ms,
        "burst": summary(run.burst),
        "probe_rate_per_s": round(statistics.mean(s.sent_rate for s in segments)),
        "probe_records": sum(s.records for s in segments),
        "events_matched": sum(s.matched for s in segments),
        "latency_ms": percentiles(sorted(run.latencies)),
        "segments_p50_ms": [s.p50_ms for s in segments],
        "segments_p99_ms": [s.p99_ms for s in segments],
        "transactions_per_s": round(transactions / seconds, 1),
        "mean_transaction_ms": round(
            1000 * sum(s.transaction_seconds for s in segments) / max(1.0, transactions), 1
        ),
        "process_cpu_share": round(sum(s.cpu_seconds for s in segments) / seconds, 3),
    }
    if reference is not None and reference.burst is not None:
        report["burst_rate_vs_default_interval"] = round(run.burst.rate / reference.burst.rate, 3)
    return report


async def probe_latency(
    bootstrap: str, run: IntervalRun, rate: float, seconds: float, seed: int
) -> tuple[Segment, list[float]]:
    """Produce at `rate`; per record, produce ack -> event readable (read_committed)."""
    raw, events = run.env["KAFKA_TOPIC_RAW"], run.env["KAFKA_TOPIC_EVENTS"]
    count = round(rate * seconds)
    bodies = delivery_reports(count, seed=seed)  # tracking ids unlike the burst's (seed 7)
    records = as_raw(bodies, int(time.time() * 1000), step_ms=max(1, round(1000 / rate)))
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=PROBE_FETCH_WAIT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await reader.start()
    await producer.start()
    acked: dict[tuple[int, int], float] = {}
    seen: dict[tuple[int, int], float] = {}
    reading = asyncio.Event()

    async def read() -> None:
        partitions = [TopicPartition(events, p) for p in range(PARTITIONS)]
        reader.assign(partitions)
        await reader.seek_to_end(*partitions)
        for tp in partitions:
            await reader.position(tp)
        reading.set()
        while True:
            batches = await reader.getmany(timeout_ms=100)
            now = time.perf_counter()
            for batch in batches.values():
                for record in batch:
                    lineage = orjson.loads(record.value)["lineage"]
                    seen[(lineage["partition"], lineage["offset"])] = now

    def on_ack(delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            metadata = delivery.result()
            acked[(metadata.partition, metadata.offset)] = time.perf_counter()

    def transactions() -> tuple[float, float]:
        registry = run.registry
        count = registry.get_sample_value(
            "postback_processor_transactions_total", {"result": "committed"}
        )
        spent = registry.get_sample_value("postback_processor_transaction_duration_seconds_sum")
        return count or 0.0, spent or 0.0

    reading_task = asyncio.create_task(read())
    try:
        await reading.wait()
        transactions_before, spent_before = transactions()
        cpu_before = time.process_time()
        started = time.perf_counter()
        for n, (key, value, headers, timestamp) in enumerate(records):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            delivery = await producer.send(
                raw, value, key=key, headers=headers, timestamp_ms=timestamp
            )
            delivery.add_done_callback(on_ack)
        await producer.flush()
        sent_s = time.perf_counter() - started
        await poll(lambda: len(acked) == count and all(key in seen for key in acked), timeout_s=10)
        probe_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_before
        transactions_after, spent_after = transactions()
    finally:
        reading_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading_task
        await producer.stop()
        await reader.stop()
    latencies = sorted((seen[key] - at) * 1000 for key, at in acked.items() if key in seen)
    figures = percentiles(latencies)
    segment = Segment(
        sent_rate=count / sent_s,
        records=count,
        matched=len(latencies),
        p50_ms=figures.get("p50", float("nan")),
        p99_ms=figures.get("p99", float("nan")),
        seconds=probe_s,
        transactions=transactions_after - transactions_before,
        transaction_seconds=spent_after - spent_before,
        cpu_seconds=cpu_s,
    )
    return segment, latencies


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(len(values) * q))], 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(values[-1], 1)}


# ------------------------------------------------------------------------------- profiling


async def profiled_pass(
    bootstrap: str, raw: str, total: int, watcher: CommitWatcher
) -> dict[str, Any]:
    """One more processor pass under cProfile (this thread: runtime, aiokafka, event loop).

    cProfile slows Python code unevenly, so read shares, not absolute times."""
    env = processor_env(bootstrap, "profile", KAFKA_TOPIC_RAW=raw)
    profile = cProfile.Profile()
    async with started_runtime(env) as (runtime, _):
        profile.enable()
        measured = await timed_pass(watcher, runtime, env["PROCESSOR_GROUP_ID"], raw, total)
        profile.disable()
    stats = pstats.Stats(profile)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # untyped internals
    total_s = sum(entry[2] for entry in entries.values())

    def label(func: tuple[str, int, str]) -> str:
        path, line, name = func
        short = "/".join(Path(path).parts[-2:]) if path != "~" else "builtin"
        return f"{short}:{line}:{name}"

    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:25]
    by_cumulative = sorted(entries.items(), key=lambda item: item[1][3], reverse=True)[:40]
    return {
        "profiled_rate": round(measured.rate),
        "profiled_seconds": round(total_s, 2),
        "columns": ["us_per_record", "calls_per_record"],
        "own_time": {
            label(func): [round(entry[2] / total * 1e6, 2), round(entry[1] / total, 3)]
            for func, entry in by_own
        },
        "cumulative_time": {
            label(func): [round(entry[3] / total * 1e6, 2), round(entry[1] / total, 3)]
            for func, entry in by_cumulative
        },
    }


# ---------------------------------------------------------------------------------- report


def summary(measured: Pass) -> dict[str, float]:
    return {
        "records": measured.records,
        "seconds": round(measured.seconds, 3),
        "rate": round(measured.rate),
        "steady_rate": round(measured.steady_rate),
    }


def throughput_report(result: Throughput, alone: dict[str, dict[str, float]]) -> dict[str, Any]:
    rates = {name: [p.rate for p in passes] for name, passes in result.passes.items()}
    steady = {name: [p.steady_rate for p in passes] for name, passes in result.passes.items()}
    medians = {name: statistics.median(values) for name, values in rates.items()}
    per_round = [p / b for p, b in zip(rates["processor"], rates["bare_dedupe"], strict=True)]
    ratio = medians["processor"] / medians["bare_dedupe"]
    emitted_share = result.counts[0]["events_emitted"] / result.passes["processor"][0].records
    own_us = (1 / medians["processor"] - 1 / medians["bare_dedupe"]) * 1e6
    return {
        "records": result.passes["processor"][0].records,
        "rates_per_s": {name: [round(v) for v in values] for name, values in rates.items()},
        "steady_rates_per_s": {name: [round(v) for v in values] for name, values in steady.items()},
        "median_rates_per_s": {name: round(v) for name, v in medians.items()},
        "broker_warm_up_rates_per_s": [round(p.rate) for p in result.warm_up],
        "ratio_processor_to_bare_dedupe": round(ratio, 3),
        "ratio_per_round": [round(r, 3) for r in per_round],
        "ratio_processor_to_bare_dedupe_single": round(
            medians["processor"] / medians["bare_dedupe_single"], 3
        ),
        "ratio_processor_to_passthrough": round(
            medians["processor"] / medians["bare_passthrough"], 3
        ),
        # The rates above count raw records consumed; this many of them became events:
        "processor_median_events_emitted_per_s": round(medians["processor"] * emitted_share),
        "processor_own_us_per_record": round(own_us, 1),
        "processor_counts_per_round": [{k: round(v) for k, v in c.items()} for c in result.counts],
        "pipeline_alone": {
            name: {k: round(v, 2) for k, v in figures.items()} for name, figures in alone.items()
        },
        "targets": {
            "events_per_s": 10_000,
            "ratio": 0.45,
            "met_rate": medians["processor"] >= 10_000,
            "met_ratio": ratio >= 0.45,
        },
    }


def restore_report(result: Throughput, state_keys: int) -> dict[str, Any]:
    rates = [r["records_per_s"] for r in result.restore]
    ratio = statistics.median(rates) / statistics.median(result.restore_floor)
    return {
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in result.restore],
        "median_records_per_s": round(statistics.median(rates)),
        "median_s_per_million": round(1e6 / statistics.median(rates), 2),
        "bare_reread_records_per_s": [round(v) for v in result.restore_floor],
        "ratio_restore_to_bare_reread": round(ratio, 3),
        "dedupe_bytes_per_key_processor_gauges": round(
            result.dedupe_bytes / max(1.0, result.dedupe_keys), 1
        ),
        "dedupe_keys_held": round(result.dedupe_keys),
        "window_alone": {"keys": state_keys, **window_bytes_per_key(state_keys)},
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and which source files differed from it (a shared work tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git(
        "status", "--porcelain", "--", "ingest", "consumers", "common", "devstack", "bench"
    )
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_changes": [line[3:] for line in changed.splitlines() if line.strip()],
    }


def machine() -> dict[str, Any]:
    pom = (ROOT / "devstack" / "pom.xml").read_text()
    kafka = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "aiokafka": version("aiokafka"),
        "orjson": version("orjson"),
        "uvloop": version("uvloop"),
        "kafka": (
            "configured cluster"
            if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            else (kafka.group(1) if kafka else "unknown")
        ),
        "event_loop": "uvloop (as python -m consumers.processor runs)",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def bench(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "B3 processor",
        "machine": machine(),
        "code": code_version(),
    }
    started = time.perf_counter()
    records = as_raw(input_bodies(args.count, args.xml_share, args.retry_ratio), hours_ago_ms(1))
    # The input stays in memory for the whole run; frozen, it costs the measured loops nothing
    # in garbage collection (a processor in production holds no such heap).
    gc.collect()
    gc.freeze()
    settings = ProcessorSettings.from_environ(processor_env(bootstrap, "settings"))
    # The first pass fills the enrichment caches (phone numbers); every measured Kafka pass
    # runs with them warm, so the second pass is the one that explains their per-record cost.
    alone = {
        "cold_caches": pipeline_alone(records, settings),
        "warm_caches": pipeline_alone(records, settings),
    }
    async with CommitWatcher(bootstrap) as watcher:
        await warm_up(bootstrap, records[:WARM_UP_RECORDS], watcher)
        result = await throughput(bootstrap, records, args.rounds, args.warm_up_s, watcher)
        report["throughput"] = throughput_report(result, alone)
        report["throughput"]["input"] = {
            "records": len(records),
            "xml_share_of_distinct": args.xml_share,
            "retry_ratio": args.retry_ratio,
            "partitions": PARTITIONS,
            "baseline": "bare_dedupe: one transactional producer per raw partition",
        }
        report["restore"] = restore_report(result, args.state_keys)
        report["commit_interval"] = await commit_intervals(
            bootstrap,
            watcher,
            args.intervals,
            records[: args.burst],
            args.probe_rate,
            args.probe_seconds,
            args.probe_rounds,
        )
        if args.profile:
            raw = f"bench.profile.{uuid.uuid4().hex[:8]}.raw"
            await create_topics(bootstrap, raw)
            await produce(bootstrap, raw, records)
            report["profile"] = await profiled_pass(bootstrap, raw, len(records), watcher)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="raw records, retries incl.")
    parser.add_argument("--rounds", type=int, default=2, help="passes of each loop")
    parser.add_argument("--xml-share", type=float, default=0.1)
    parser.add_argument("--retry-ratio", type=float, default=0.1)
    parser.add_argument("--warm-up-s", type=float, default=25.0, help="untimed passes first")
    parser.add_argument("--burst", type=int, default=15_000, help="records drained per interval")
    parser.add_argument("--intervals", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--probe-rate", type=float, default=200.0, help="records/s")
    parser.add_argument("--probe-seconds", type=float, default=6.0, help="per interval")
    parser.add_argument("--probe-rounds", type=int, default=2, help="segments per interval")
    parser.add_argument("--state-keys", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="one more pass under cProfile")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with broker_or_configured() as bootstrap:
        report = uvloop.run(bench(args, bootstrap))
    save(report, args.out)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
