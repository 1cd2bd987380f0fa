"""B4: time from the edge's 200 to the event being readable (read_committed), at fixed rates.

    python -m bench.end_to_end [--rates 200 1000] [--seconds 15] [--connections 4]

Target: p99 under 1 s at every rate.

What is measured
----------------
A broker, the edge (`python -m ingest`) and the processor (`python -m consumers.processor`)
run as separate processes with default settings, as `make run` starts them, on topics and
groups of this run. Realistic postbacks (`simulator.mix`: MT sent/final pairs, MO, 10% v1 XML,
1% malformed) are posted at a fixed rate over a few keep-alive connections
(`simulator.connection`); postback n is due at start + n/rate, and a connection takes the
next due postback once its previous one is answered, so the schedule only slips when every
connection is busy (the send lag says so). For each postback the wall time of its 200 is
noted; a `read_committed` consumer on the events topic notes when each event becomes
readable. Events are matched by (tracking id, code) from the event JSON: the realistic mix
puts a message's sent and final postbacks under one tracking id (the processor's latency join
needs that), and the code tells them apart; the pair is unique within a run (no retries are
sent) and tracking ids embed a per-segment seed. Malformed postbacks are sent too (dead
letters) but have no event to time. A second consumer on the raw topic (read_uncommitted)
splits the figure: edge 200 -> raw record readable, the rest is the processor and its commit
interval, `PROCESSOR_COMMIT_INTERVAL_MS` (reported; it dominates).

The baseline, and why this one
------------------------------
A bare aiokafka producer with the edge's options (acks=all, idempotent, linger 0) sends the
same postbacks, built as the edge builds raw records, at the same rate into a topic of its own;
a bare transactional consume-dedupe-produce loop (`bench.processor.BareLoop`: one
transactional producer per partition, a transaction per commit interval or 5,000 records,
offsets committed inside it) in a process of its own, with the processor's commit interval,
copies them to an output topic; latency is producer ack -> record readable there
(read_committed). That is the floor of any exactly-once design with this commit interval:
what the pipeline adds on top of it is the HTTP hop and the edge, parsing and enrichment, and
scheduling. The other candidate, edge 200 -> raw record readable, leaves out the transaction
interval that makes up almost all of the figure, so a ratio against it would only restate
the commit interval; it is reported as a breakdown instead. Ratio = pipeline / baseline
percentile, per rate (1.0 is ideal).

Segments of the two paths alternate (order reversed every round) so that drift in machine
load hits both; an untimed warm-up through both paths comes first (a fresh broker runs slowly
for its first seconds of load). Figures on a shared 2-core machine swing with its load: the
report carries the load average and each process's CPU share.

Writes bench/results/end_to_end.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import bench.processor as b3
from bench.report import save
from consumers.settings import ProcessorSettings
from devstack.kafka import broker_or_configured, die_with_parent, free_port
from ingest.records import build_record
from ingest.settings import EdgeSettings
from simulator.connection import Connection, Target
from simulator.mix import MixSpec, Postback, generate
from testkit.kafka_tools import ProducerRecord, produce

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "end_to_end.json"
PARTITIONS = b3.PARTITIONS  # the services' default; every topic of a run has this many
TARGET_P99_MS = 1000.0
ANSWER_TIMEOUT_S = 10.0  # the provider's: a slower answer counts as a failure
# A segment stops taking new postbacks this late (x its schedule, + 1 s) when the edge cannot
# keep up, so that a slow machine bounds the run instead of stretching it.
SEND_CUTOFF_FACTOR = 1.5
DRAIN_TIMEOUT_S = 15.0  # after a segment's last answer, wait at most this for its events
READY_TIMEOUT_S = 90.0
IDLE_BETWEEN_S = 0.5  # no transaction open, commit timers ticking, before each segment
READER_FETCH_WAIT_MS = b3.PROBE_FETCH_WAIT_MS  # a reader must not add a long poll of its own
USER_AGENT = b"bench-end-to-end"
SERVE_BARE_LOOP = "--serve-bare-loop"


# ----------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...); empty once gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    figures = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            figures[name] = int(parts[0])
    return figures


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pid() -> int | None:
    """The pid of the Kafka broker this process started (`LocalKafka`), if any."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if stat[1] == me and b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


@dataclass(frozen=True)
class ServiceSpec:
    module: str
    port_variable: str | None  # the service's HTTP port setting, None without HTTP
    partitions_ready: bool  # ready also means every partition assigned (and restored)


SERVICES = {
    "edge": ServiceSpec("ingest", "EDGE_PORT", partitions_ready=False),
    "processor": ServiceSpec("consumers.processor", "PROCESSOR_PORT", partitions_ready=True),
    "metrics": ServiceSpec("consumers.metrics", "METRICS_PORT", partitions_ready=True),
    # B4's baseline loop: this module with SERVE_BARE_LOOP; readiness shows in its output.
    "bare_loop": ServiceSpec("bench.end_to_end", None, partitions_ready=False),
}


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Stack:
    """Services of the pipeline as processes, the way `make run` starts them, on topics,
    groups and transactional ids of their own (so runs never meet), logging to files.

    Each service gets `env` (os.environ, then this run's settings, then `extra`). A service
    started again (`restart`) keeps its settings, so a restarted processor rejoins its group.
    """

    def __init__(self, bootstrap: str, tag: str, extra: Mapping[str, str] | None = None) -> None:
        run = f"bench.{tag}.{uuid.uuid4().hex[:8]}"
        self.ports = {name: free_port() for name in ("edge", "processor", "metrics")}
        self.env: dict[str, str] = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "KAFKA_TOPIC_RAW": f"{run}.raw",
            "KAFKA_TOPIC_EVENTS": f"{run}.events",
            "KAFKA_TOPIC_DLQ": f"{run}.dlq",
            "PROCESSOR_GROUP_ID": run,
            "PROCESSOR_TRANSACTIONAL_ID_PREFIX": run,
            "METRICS_GROUP_ID": f"{run}.metrics",
            "METRICS_AUTO_OFFSET_RESET": "earliest",
            "EDGE_PORT": str(self.ports["edge"]),
            "PROCESSOR_PORT": str(self.ports["processor"]),
            "METRICS_PORT": str(self.ports["metrics"]),
            "LOG_LEVEL": "WARNING",
            **(extra or {}),
        }
        self.bootstrap = bootstrap
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs = tempfile.TemporaryDirectory(prefix=f"bench-{tag}-")

    @property
    def raw(self) -> str:
        return self.env["KAFKA_TOPIC_RAW"]

    @property
    def events(self) -> str:
        return self.env["KAFKA_TOPIC_EVENTS"]

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def log_tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = (Path(self._logs.name) / f"{name}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return "(no log)"

    def start(self, name: str, extra: Mapping[str, str] | None = None) -> None:
        """Start a service and return once it is ready (blocks the calling thread)."""
        self.spawn(name, extra)
        self.wait_ready(name)

    async def start_async(self, name: str, extra: Mapping[str, str] | None = None) -> None:
        """`start` inside an event loop: the loop keeps running while the service starts."""
        self.spawn(name, extra)
        await asyncio.to_thread(self.wait_ready, name)

    def spawn(self, name: str, extra: Mapping[str, str] | None = None) -> None:
        """Start the process. Call from the main thread: the child gets SIGTERM when its
        forking thread ends, so a killed benchmark leaves no service behind."""
        spec = SERVICES[name]
        command = [sys.executable, "-m", spec.module]
        if name == "bare_loop":
            command.append(SERVE_BARE_LOOP)
        log = open(Path(self._logs.name) / f"{name}.log", "ab")  # noqa: SIM115 - the child's
        with log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.env, **(extra or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def wait_ready(self, name: str) -> None:
        """Until /readyz says ready (and, where it applies, every partition is assigned)."""
        spec = SERVICES[name]
        if spec.port_variable is None:
            return
        process = self.processes[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited at start-up ({process.returncode}):\n{self.log_tail(name)}"
                )
            with contextlib.suppress(OSError):
                status, body = http_get(self.url(name, "/readyz"))
                if status == 200 and (
                    not spec.partitions_ready
                    or len(orjson.loads(body).get("partitions", ())) == PARTITIONS
                ):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail(name)}")

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM (the service's clean stop) and wait; SIGKILL past `timeout`."""
        process = self.processes.pop(name, None)
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            for name in list(self.processes):
                self.stop(name)
        finally:
            self._logs.cleanup()


def metric_sum(text: str, name: str) -> float:
    """Sum of the samples called exactly `name` (every label set) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ----------------------------------------------------------------------------- traffic


def traffic(count: int, seed: int, xml_share: float, malformed_share: float) -> list[Postback]:
    """`count` realistic postbacks in sending order (no retries)."""
    return generate(
        MixSpec(
            count=max(1, count), seed=seed, xml_share=xml_share, malformed_share=malformed_share
        )
    )


def edge_records(postbacks: Sequence[Postback]) -> list[ProducerRecord]:
    """The raw records the edge would write for these postbacks, received up to now."""
    now_ms = int(time.time() * 1000)
    records: list[ProducerRecord] = []
    for n, postback in enumerate(postbacks):
        record = build_record(
            postback.body,
            source="mt",
            received_at_ms=now_ms - len(postbacks) + n,
            client_addr="127.0.0.1",
            request_id=f"bulk-{n}",
            content_type=postback.content_type.encode(),
            user_agent=USER_AGENT,
        )
        records.append((record.key, record.value, record.headers, record.timestamp_ms))
    return records


def event_key(postback: Postback) -> tuple[str, str] | None:
    """What identifies this postback's event in the event JSON; None without an event."""
    if postback.stage == "malformed" or postback.tracking_id is None:
        return None
    return postback.tracking_id, postback.kind.split("/", 1)[1]


@dataclass
class Sent:
    """One paced sending of postbacks: when each was acknowledged, and how the pacing went."""

    acked: dict[int, float] = field(default_factory=dict)  # index -> perf_counter of the ack
    answer_ms: list[float] = field(default_factory=list)  # HTTP: request -> 200
    late_ms: list[float] = field(default_factory=list)  # how late each send left its slot
    failures: Counter[str] = field(default_factory=Counter)
    unsent: int = 0  # not sent by the cutoff
    seconds: float = 0.0  # first send -> last answer


def cutoff(started: float, count: int, rate: float | None) -> float:
    """When a paced sending stops taking new postbacks (never, unpaced)."""
    if rate is None:
        return float("inf")
    return started + SEND_CUTOFF_FACTOR * count / rate + 1.0


async def post_at_rate(
    port: int,
    postbacks: Sequence[Postback],
    rate: float | None,
    connections: int,
    max_seconds: float | None = None,
    path: str = "/postbacks/mt",
) -> Sent:
    """Post over `connections` keep-alive connections, postback n due at n/rate (as fast as
    the connections go when `rate` is None); one request in flight per connection. Past the
    cutoff (or `max_seconds`) the rest are counted as unsent, and not sent."""
    target = Target.parse(f"http://127.0.0.1:{port}{path}")
    sent = Sent()
    order = iter(range(len(postbacks)))  # shared: each connection takes the next one due
    started = time.perf_counter()
    stop_at = cutoff(started, len(postbacks), rate)
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
    """The baseline's sender: raw records as the edge builds them, postback n due at n/rate."""
    sent = Sent()

    def on_ack(n: int, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            sent.failures["produce"] += 1
        else:
            sent.acked[n] = time.perf_counter()

    started = time.perf_counter()
    stop_at = cutoff(started, len(postbacks), rate)
    for n, postback in enumerate(postbacks):
        if time.perf_counter() > stop_at:
            sent.unsent += len(postbacks) - n
            break
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.late_ms.append((time.perf_counter() - due) * 1000)
        record = build_record(
            postback.body,
            source="mt",
            received_at_ms=int(time.time() * 1000),
            client_addr="127.0.0.1",
            request_id=f"bench-{n}",
            content_type=postback.content_type.encode(),
            user_agent=USER_AGENT,
        )
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


# ------------------------------------------------------------------------------ reading


class Watcher:
    """Reads a topic from its current end and notes when each expected record is readable.

    `expect(keys)` starts a new segment: records whose `key_of` is in `keys` get the
    perf_counter of the fetch that returned them, under the key's index; anything else
    (an earlier segment's straggler, a dead letter) is ignored.
    """

    def __init__(
        self, bootstrap: str, topic: str, isolation: str, key_of: Callable[[Any], object]
    ) -> None:
        self._topic = topic
        self._key_of = key_of
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level=isolation,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        )
        self._keys: Mapping[Any, int] = {}
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

    def expect(self, keys: Mapping[Any, int]) -> dict[int, float]:
        self._keys, self.seen = keys, {}
        return self.seen

    async def _read(self) -> None:
        key_of = self._key_of
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


def event_key_of(record: Any) -> object:
    try:
        event = orjson.loads(record.value)
        return (event["tracking_id"], event["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def value_of(record: Any) -> object:
    return record.value


async def until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# ----------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One paced sending through one path, and what became readable."""

    path: str  # "pipeline" or "baseline"
    rate: float
    sent: Sent
    count: int
    measured: int  # postbacks with an event to time
    latencies_ms: list[float]  # ack -> readable, per matched postback
    raw_ms: list[float]  # pipeline only: edge 200 -> raw record readable (read_uncommitted)
    cpu_s: dict[str, float]  # per process, over the segment (sending and draining)
    wall_s: float


@dataclass
class Bench:
    """Everything a run keeps alive: the stack, the readers, the baseline's producer."""

    stack: Stack
    events: Watcher
    raw: Watcher
    baseline_out: Watcher
    producer: AIOKafkaProducer
    baseline_raw: str
    connections: int
    xml_share: float
    malformed_share: float
    pids: dict[str, int]
    seeds: Iterator[int] = field(default_factory=lambda: iter(range(1000, 10**6)))

    def cpu(self) -> dict[str, float]:
        figures = {name: proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        figures["bench"] = time.process_time()
        return figures

    async def segment(self, path: str, rate: float, seconds: float) -> Segment:
        postbacks = traffic(
            round(rate * seconds), next(self.seeds), self.xml_share, self.malformed_share
        )
        keys = {key: n for n, p in enumerate(postbacks) if (key := event_key(p)) is not None}
        measured = set(keys.values())
        raw_seen: dict[int, float] = {}
        cpu_before = self.cpu()
        started = time.perf_counter()
        if path == "pipeline":
            seen = self.events.expect(keys)
            raw_seen = self.raw.expect({postbacks[n].body: n for n in measured})
            sent = await post_at_rate(self.stack.ports["edge"], postbacks, rate, self.connections)
        else:
            seen = self.baseline_out.expect({postbacks[n].body: n for n in measured})
            sent = await produce_at_rate(self.producer, self.baseline_raw, postbacks, rate)
        wanted = measured & sent.acked.keys()
        await until(lambda: wanted <= seen.keys(), DRAIN_TIMEOUT_S)
        wall = time.perf_counter() - started
        cpu_after = self.cpu()
        return Segment(
            path=path,
            rate=rate,
            sent=sent,
            count=len(postbacks),
            measured=len(wanted),
            latencies_ms=[(seen[n] - sent.acked[n]) * 1000 for n in wanted if n in seen],
            raw_ms=[(raw_seen[n] - sent.acked[n]) * 1000 for n in wanted if n in raw_seen],
            cpu_s={name: cpu_after[name] - cpu_before[name] for name in cpu_after},
            wall_s=wall,
        )


# ------------------------------------------------------------------------------ report


def percentiles(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    figures = b3.percentiles(ordered)
    if ordered:
        figures["min"] = round(ordered[0], 1)
    return figures


def path_report(segments: list[Segment]) -> dict[str, Any]:
    latencies = [v for s in segments for v in s.latencies_ms]
    acked = sum(len(s.sent.acked) for s in segments)
    seconds = sum(s.sent.seconds for s in segments)
    wall = sum(s.wall_s for s in segments)
    failures: Counter[str] = Counter()
    for s in segments:
        failures.update(s.sent.failures)
    cpu: Counter[str] = Counter()
    for s in segments:
        cpu.update(s.cpu_s)
    report: dict[str, Any] = {
        "sent": sum(s.count for s in segments),
        "acked": acked,
        "unsent_at_cutoff": sum(s.sent.unsent for s in segments),
        "failures": dict(failures),
        "achieved_rate_per_s": round(acked / seconds, 1) if seconds else 0.0,
        "events_expected": sum(s.measured for s in segments),
        "events_matched": len(latencies),
        "latency_ms": percentiles(latencies),
        "segments_p50_ms": [percentiles(s.latencies_ms).get("p50") for s in segments],
        "segments_p99_ms": [percentiles(s.latencies_ms).get("p99") for s in segments],
        "send_late_ms": percentiles(v for s in segments for v in s.sent.late_ms),
        "cpu_share": {name: round(value / wall, 3) for name, value in sorted(cpu.items())},
    }
    if segments and segments[0].path == "pipeline":
        report["http_answer_ms"] = percentiles(v for s in segments for v in s.sent.answer_ms)
        report["edge_200_to_raw_readable_ms"] = percentiles(v for s in segments for v in s.raw_ms)
    return report


def rate_report(rate: float, segments: list[Segment]) -> dict[str, Any]:
    pipeline = path_report([s for s in segments if s.path == "pipeline"])
    baseline = path_report([s for s in segments if s.path == "baseline"])
    ratios = {
        name: round(pipeline["latency_ms"][name] / baseline["latency_ms"][name], 2)
        for name in ("p50", "p90", "p99")
        if pipeline["latency_ms"].get(name) and baseline["latency_ms"].get(name)
    }
    p99 = pipeline["latency_ms"].get("p99", float("inf"))
    complete = pipeline["events_matched"] == pipeline["events_expected"] > 0
    # The target is stated at a rate: a run that could not send at it proves nothing.
    achieved = pipeline["achieved_rate_per_s"] >= 0.95 * rate
    return {
        "rate_per_s": rate,
        "pipeline": pipeline,
        "baseline": baseline,
        "ratio_pipeline_to_baseline": ratios,
        "target": {
            "p99_ms": TARGET_P99_MS,
            "met": bool(p99 < TARGET_P99_MS and complete and achieved),
            "p99_under_target": bool(p99 < TARGET_P99_MS),
            "rate_achieved": achieved,
            "every_event_seen": complete,
        },
    }


def changed_files(*paths: str) -> dict[str, Any]:
    """The commit measured, and which files under `paths` differed from it (a shared tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", *paths)
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_changes": [line[3:] for line in changed.splitlines() if line.strip()],
    }


def machine() -> dict[str, Any]:
    info = b3.machine()
    info["event_loop"] = "uvloop (every service and this client)"
    return info


def table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"B4 end to end: edge 200 -> event readable (read_committed); "
        f"PROCESSOR_COMMIT_INTERVAL_MS={settings['processor_commit_interval_ms']}, "
        f"{settings['connections']} keep-alive connections",
        f"{'rate/s':>7} {'path':<9} {'achieved/s':>10} {'matched':>13} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for rate in report["rates"]:
        for path in ("pipeline", "baseline"):
            figures = rate[path]
            latency = figures["latency_ms"]
            matched = f"{figures['events_matched']}/{figures['events_expected']}"
            lines.append(
                f"{rate['rate_per_s']:>7g} {path:<9} {figures['achieved_rate_per_s']:>10} "
                f"{matched:>13} {latency.get('p50', '-'):>8} {latency.get('p90', '-'):>8} "
                f"{latency.get('p99', '-'):>8} {latency.get('max', '-'):>8}"
            )
        ratio = rate["ratio_pipeline_to_baseline"]
        lines.append(
            f"{'':>7} {'ratio':<9} {'':>10} {'':>13} {ratio.get('p50', '-'):>8} "
            f"{ratio.get('p90', '-'):>8} {ratio.get('p99', '-'):>8}"
        )
        raw = rate["pipeline"]["edge_200_to_raw_readable_ms"]
        http = rate["pipeline"]["http_answer_ms"]
        lines.append(
            f"{'':>7} of which edge 200 -> raw readable p50 {raw.get('p50')} ms, "
            f"p99 {raw.get('p99')} ms; HTTP answer p50 {http.get('p50')} ms, "
            f"p99 {http.get('p99')} ms"
        )

    def verdict(target: dict[str, Any]) -> str:
        if target["met"]:
            return "met"
        reasons = [
            reason
            for reason, ok in (
                ("p99 over", target["p99_under_target"]),
                ("rate not achieved", target["rate_achieved"]),
                ("events missing", target["every_event_seen"]),
            )
            if not ok
        ]
        return f"NOT MET ({', '.join(reasons)})"

    verdicts = ", ".join(f"{r['rate_per_s']:g}/s {verdict(r['target'])}" for r in report["rates"])
    lines.append(f"target p99 < {TARGET_P99_MS:g} ms: {verdicts}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class Options:
    rates: tuple[float, ...] = (200.0, 1000.0)
    seconds: float = 15.0  # per rate and path, split over the rounds
    rounds: int = 2
    connections: int = 8  # each waits for its answer: 4 could not carry 1,000/s here
    warm_up_records: int = 20_000  # straight into both raw topics: the broker's JIT
    warm_up_s: float = 10.0  # then paced, through both paths
    xml_share: float = 0.1
    malformed_share: float = 0.01
    commit_interval_ms: int | None = None  # None: the processor's default (or the environment)


async def bulk_warm_up(bootstrap: str, count: int, groups: Mapping[str, str]) -> dict[str, Any]:
    """Records straight into each raw topic, until each group committed them all: a fresh
    broker (its JIT) and the loops' first transactions get real load before any figure.
    Bodies use a seed no measured segment uses."""
    if count <= 0:
        return {}
    records = edge_records(traffic(count, 1, 0.1, 0.01))
    figures: dict[str, Any] = {"records": count}
    async with b3.CommitWatcher(bootstrap) as watcher:
        for topic, group in groups.items():
            started = time.perf_counter()
            await produce(bootstrap, topic, records)
            done = await watcher.until(group, topic, count, started)
            figures[f"{topic}_rate_per_s"] = round(done.rate)
    return figures


async def bench(options: Options, bootstrap: str, stack: Stack) -> dict[str, Any]:
    begun = time.perf_counter()
    processor = ProcessorSettings.from_environ(stack.env)
    edge = EdgeSettings.from_environ(stack.env)
    baseline_raw, baseline_out = f"{stack.raw}.baseline", f"{stack.raw}.baseline.out"
    await b3.create_topics(bootstrap, baseline_raw, baseline_out)
    await stack.start_async("edge")
    await stack.start_async("processor")
    bare_env = {
        "BENCH_BARE_RAW": baseline_raw,
        "BENCH_BARE_OUT": baseline_out,
        "BENCH_BARE_GROUP": f"{baseline_raw}.group",
    }
    await stack.start_async("bare_loop", bare_env)
    pids = {name: stack.pid(name) for name in ("edge", "processor", "bare_loop")}
    broker = local_broker_pid()
    if broker is not None:
        pids["broker"] = broker
    events = Watcher(bootstrap, stack.events, "read_committed", event_key_of)
    raw = Watcher(bootstrap, stack.raw, "read_uncommitted", value_of)
    out = Watcher(bootstrap, baseline_out, "read_committed", value_of)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=edge.linger_ms,  # the edge's producer options
    )
    report: dict[str, Any] = {
        "benchmark": "B4 end to end: edge 200 -> event readable (read_committed)",
        "machine": machine(),
        "code": changed_files("ingest", "consumers", "common"),
        "settings": {
            "processor_commit_interval_ms": processor.commit_interval_ms,
            "processor_commit_max_records": processor.commit_max_records,
            "edge_kafka_linger_ms": edge.linger_ms,
            "partitions": PARTITIONS,
            "rates_per_s": list(options.rates),
            "seconds_per_rate_and_path": options.seconds,
            "rounds": options.rounds,
            "connections": options.connections,
            "warm_up_records": options.warm_up_records,
            "warm_up_s": options.warm_up_s,
            "xml_share_of_messages": options.xml_share,
            "malformed_share": options.malformed_share,
            "reader_fetch_max_wait_ms": READER_FETCH_WAIT_MS,
            "baseline": (
                "bare producer (edge's options) ack -> record readable (read_committed) after "
                "bench.processor.BareLoop (per-partition transactional producers, dedupe) in "
                "its own process at the processor's commit interval"
            ),
        },
    }
    report["startup_seconds"] = round(time.perf_counter() - begun, 1)
    started = time.perf_counter()
    report["bulk_warm_up"] = await bulk_warm_up(
        bootstrap,
        options.warm_up_records,
        {
            stack.raw: processor.group_id,
            baseline_raw: bare_env["BENCH_BARE_GROUP"],
        },
    )
    for watcher in (events, raw, out):
        await watcher.start()
    await producer.start()
    try:
        run = Bench(
            stack=stack,
            events=events,
            raw=raw,
            baseline_out=out,
            producer=producer,
            baseline_raw=baseline_raw,
            connections=options.connections,
            xml_share=options.xml_share,
            malformed_share=options.malformed_share,
            pids=pids,
        )
        warm_rate = max(options.rates)
        warm: list[Segment] = []
        for path in ("pipeline", "baseline"):
            warm.append(await run.segment(path, warm_rate, options.warm_up_s / 2))
            if not warm[-1].latencies_ms:
                raise RuntimeError(f"warm-up: no {path} record came through; see the logs")
        report["warm_up"] = [
            {"path": s.path, "matched": len(s.latencies_ms), **percentiles(s.latencies_ms)}
            for s in warm
        ]
        rates = []
        for rate in options.rates:
            segments: list[Segment] = []
            for round_ in range(options.rounds):
                order = ("baseline", "pipeline") if round_ % 2 == 0 else ("pipeline", "baseline")
                for path in order:
                    await asyncio.sleep(IDLE_BETWEEN_S)
                    segments.append(await run.segment(path, rate, options.seconds / options.rounds))
            rates.append(rate_report(rate, segments))
        report["rates"] = rates
    finally:
        await producer.stop()
        for watcher in (events, raw, out):
            await watcher.stop()
    exits = {name: stack.stop(name) for name in ("edge", "processor", "bare_loop")}
    report["service_exit_codes"] = exits
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def run(options: Options) -> dict[str, Any]:
    """B4 on a fresh local broker (or KAFKA_BOOTSTRAP_SERVERS); returns the report."""
    extra = {}
    if options.commit_interval_ms is not None:
        extra["PROCESSOR_COMMIT_INTERVAL_MS"] = str(options.commit_interval_ms)
    with broker_or_configured() as bootstrap, Stack(bootstrap, "b4", extra) as stack:
        return uvloop.run(bench(options, bootstrap, stack))


# ----------------------------------------------------------------- the baseline's loop


def serve_bare_loop() -> int:
    """The baseline's consume-dedupe-produce loop as a process (`--serve-bare-loop`), with
    the processor's commit interval and batch cap from the same environment; SIGTERM stops it
    after committing what is open."""
    settings = ProcessorSettings.from_environ(os.environ)
    # BareLoop reads the commit policy from these module constants on every pass.
    b3.COMMIT_INTERVAL_MS = settings.commit_interval_ms
    b3.COMMIT_MAX_RECORDS = settings.commit_max_records

    async def serve() -> None:
        loop = b3.BareLoop(
            settings.kafka.bootstrap_servers,
            os.environ["BENCH_BARE_RAW"],
            os.environ["BENCH_BARE_OUT"],
            os.environ["BENCH_BARE_GROUP"],
            dedupe=True,
            per_partition=True,
        )
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await loop.start()
        await loop.run(stop)

    uvloop.run(serve())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end", description=(__doc__ or "").splitlines()[0]
    )
    defaults = Options()
    parser.add_argument("--rates", type=float, nargs="+", default=list(defaults.rates))
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per rate and path")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="segments per path")
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--warm-up-records", type=int, default=defaults.warm_up_records)
    parser.add_argument("--warm-up-s", type=float, default=defaults.warm_up_s)
    parser.add_argument("--xml-share", type=float, default=defaults.xml_share)
    parser.add_argument("--malformed-share", type=float, default=defaults.malformed_share)
    parser.add_argument(
        "--commit-interval-ms",
        type=int,
        default=None,
        help="PROCESSOR_COMMIT_INTERVAL_MS for the processor and the baseline (default: its own)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(SERVE_BARE_LOOP, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare_loop:
        return serve_bare_loop()
    options = Options(
        rates=tuple(args.rates),
        seconds=args.seconds,
        rounds=args.rounds,
        connections=args.connections,
        warm_up_records=args.warm_up_records,
        warm_up_s=args.warm_up_s,
        xml_share=args.xml_share,
        malformed_share=args.malformed_share,
        commit_interval_ms=args.commit_interval_ms,
    )
    report = run(options)
    save(report, args.out)
    print(table(report))
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
