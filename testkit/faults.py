"""Fault drills: the whole pipeline on a three-node cluster, a fault mid-run, then an audit.

A drill runs the real edge, processor(s) and metrics service as processes against a
`LocalCluster`, drives the edge with the provider simulator on several keep-alive connections
(lost answers on, so stored postbacks are retried and must be deduplicated), applies one fault
while the traffic flows, repairs it, and then audits what Kafka holds, reading every topic
`read_committed`:

- every acknowledged notification exactly once in the events topic, and nothing there that was
  never sent (`missing`, `duplicates`, `unexpected`);
- every acknowledged malformed body exactly once in the dead-letter topic;
- only 200 and 503 answers, none later than the provider's 10 s, no broken connection;
- the metrics service counted each event once;
- how long the pipeline took to recover: from the repair until every raw partition accepted a
  probe postback (200) and the probe's event was readable.

The drill plays the orchestrator: a processor that exits is started again (its exits are in
the report); the edge and the metrics service must never need that. `tests/integration/faults`
runs the drills at small counts in `make test`; `python -m bench.faults` runs them larger and
writes the table in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from common.partitioning import default_partition
from consumers.processor.identity import Identity, event_id
from consumers.processor.parse import Unparseable, parse
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.cluster import LocalCluster
from simulator.check import expectation
from simulator.connection import Connection, Exchange, Target
from simulator.delivery import Delivery, Policy, Run, deliver
from simulator.mix import MixSpec, Postback, generate
from testkit.kafka_tools import committed_total, read_all_committed, topic_size
from testkit.services import Service

PROVIDER_ANSWER_TIMEOUT_S: Final = 10.0
PARTITIONS: Final = 6
PROBE_CONTENT_TYPE: Final = "application/json"


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """The provider's side of a drill. Each connection sends at `rate_per_connection` until
    the fault is repaired, the pipeline has recovered and `tail` more postbacks went out on
    each connection; then it sends only the retries it still owes. Retries are scaled down
    from the provider's 5 minutes so that a drill takes a minute, yet they outlast the fault."""

    connections: int = 4
    rate_per_connection: float = 15.0
    tail: int = 30
    max_per_connection: int = 10_000
    drop_answers: float = 0.1
    xml_share: float = 0.2
    malformed_share: float = 0.03
    retry_delay_s: float = 5.0
    max_retries: int = 5
    seed: int = 20261207


@dataclass
class Progress:
    """Answers seen so far, across connections; faults wait on it to strike mid-run."""

    answered: int = 0
    ok: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, exchange: Exchange) -> None:
        self.answered += 1
        self.ok += exchange.status == 200
        self.changed.set()

    async def until(self, condition: Callable[[Progress], bool], timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self):
                self.changed.clear()
                await self.changed.wait()

    async def until_ok(self, count: int, timeout: float = 120.0) -> None:
        """Until `count` attempts in all were answered 200."""
        await self.until(lambda progress: progress.ok >= count, timeout)

    async def until_more(self, answers: int, timeout: float = 120.0) -> None:
        """Until `answers` more attempts were answered (any status): traffic met the fault."""
        target = self.answered + answers
        await self.until(lambda progress: progress.answered >= target, timeout)


class PacedSender:
    """A keep-alive connection sending at most `rate` postbacks a second; reports answers."""

    def __init__(self, connection: Connection, rate: float, progress: Progress) -> None:
        self._connection = connection
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._progress = progress

    async def post(self, body: bytes, content_type: str, answer_timeout: float) -> Exchange:
        pause = self._next - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        self._next = max(self._next + self._interval, time.monotonic())
        exchange = await self._connection.post(body, content_type, answer_timeout)
        self._progress.record(exchange)
        return exchange


@dataclass
class Drill:
    """What a fault may touch while it runs."""

    cluster: LocalCluster
    plan: TrafficPlan
    topics: dict[str, str]
    edge: Service
    processors: list[Service]
    metrics: Service
    progress: Progress
    env: dict[str, str]
    notes: list[str] = field(default_factory=list)
    repaired_at: float | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)

    def repaired(self) -> None:
        self.repaired_at = time.monotonic()


Fault = Callable[[Drill], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    fault: Fault
    processors: int = 1
    plan: TrafficPlan = TrafficPlan()
    env: tuple[tuple[str, str], ...] = ()  # settings the scenario needs beyond the defaults


@dataclass
class DrillReport:
    scenario: str
    acknowledged: int  # distinct well-formed notifications answered 200 at least once
    events: int  # of those, found in the events topic
    duplicates: int  # notifications with more than one event
    missing: int
    unexpected: int  # events of notifications never sent
    dead_letters_expected: int  # distinct malformed bodies answered 200
    dead_letters_missing: int
    dead_letters_duplicated: int
    statuses: dict[str, int]
    failures: dict[str, int]  # attempts without an answer: timeout, connection, protocol
    slowest_answer_s: float
    recover_s: float | None
    metrics_counted: int
    events_written: int
    processor_exits: list[int]
    edge_starts: int
    log_lines: dict[str, int]  # per service: what on-call would have to read
    lost_exceptions: int  # "Future exception was never retrieved", stray KeyErrors
    notes: list[str]
    seconds: float

    @property
    def refused(self) -> int:
        return self.statuses.get("503", 0)

    @property
    def problems(self) -> list[str]:
        """Every broken promise; empty when the drill passed."""
        found = []
        if self.missing or self.duplicates or self.unexpected:
            found.append(
                f"events: {self.missing} missing, {self.duplicates} duplicated, "
                f"{self.unexpected} never sent"
            )
        if self.dead_letters_missing or self.dead_letters_duplicated:
            found.append(
                f"dead letters: {self.dead_letters_missing} missing, "
                f"{self.dead_letters_duplicated} duplicated"
            )
        if set(self.statuses) - {"200", "503"} or self.failures:
            found.append(f"answers other than 200/503: {self.statuses}, {self.failures}")
        if self.slowest_answer_s >= PROVIDER_ANSWER_TIMEOUT_S:
            found.append(f"an answer took {self.slowest_answer_s:.1f} s")
        if self.recover_s is None:
            found.append("did not recover")
        if self.metrics_counted != self.events_written:
            found.append(
                f"the metrics service counted {self.metrics_counted} of "
                f"{self.events_written} events"
            )
        if self.edge_starts != 1:
            found.append(f"the edge was started {self.edge_starts} times")
        if self.lost_exceptions:
            found.append(f"{self.lost_exceptions} lost exceptions in the services' logs")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "problems": self.problems
        }


async def run_drill(
    cluster: LocalCluster, scenario: Scenario, log_dir: Path, *, base_env: dict[str, str]
) -> DrillReport:
    """Run one scenario end to end on fresh topics and groups; return its audit."""
    started = time.monotonic()
    plan = scenario.plan
    prefix = f"drill.{scenario.name}.{uuid.uuid4().hex[:6]}"
    topics = {kind: f"{prefix}.{kind}" for kind in ("raw", "events", "dlq")}
    env = {
        **base_env,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "KAFKA_TOPIC_RAW": topics["raw"],
        "KAFKA_TOPIC_EVENTS": topics["events"],
        "KAFKA_TOPIC_DLQ": topics["dlq"],
        "KAFKA_TOPIC_STATE": f"{prefix}.state",
        "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
        "KAFKA_TOPIC_REPLICATION_FACTOR": "3",
        "PROCESSOR_GROUP_ID": f"{prefix}.processor",
        "PROCESSOR_TRANSACTIONAL_ID_PREFIX": prefix,
        "METRICS_GROUP_ID": f"{prefix}.metrics",
        "METRICS_AUTO_OFFSET_RESET": "earliest",
        "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
        **dict(scenario.env),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    processors = [
        Service("processor", env, log_dir, name=f"processor-{index}")
        for index in range(1, scenario.processors + 1)
    ]
    edge = Service("edge", env, log_dir)
    metrics = Service("metrics", env, log_dir)
    progress = Progress()
    drain = asyncio.Event()
    drill = Drill(cluster, plan, topics, edge, processors, metrics, progress, env)
    supervising: list[asyncio.Task[None]] = []
    exits: list[int] = []
    try:
        for processor in processors:
            await processor.start()
        await edge.start()
        await metrics.start()
        supervising = [asyncio.create_task(_supervise(p, exits, drill)) for p in processors]
        runs = [
            asyncio.create_task(_send(edge.url, plan, index, progress, drain))
            for index in range(plan.connections)
        ]
        await scenario.fault(drill)
        if drill.repaired_at is None:
            drill.repaired()
        probes, recover_s = await _probe_until_recovered(drill)
        await progress.until_more(plan.connections * plan.tail)
        drain.set()
        finished = await asyncio.gather(*runs)
        for task in supervising:
            task.cancel()
        return await _audit(drill, scenario, finished, probes, recover_s, exits, started)
    finally:
        for task in supervising:
            task.cancel()
        for service in (edge, metrics, *processors):
            await service.stop()


async def _send(
    url: str, plan: TrafficPlan, index: int, progress: Progress, drain: asyncio.Event
) -> Run:
    postbacks = generate(
        MixSpec(
            count=plan.max_per_connection,
            seed=plan.seed * 100 + index,
            xml_share=plan.xml_share,
            malformed_share=plan.malformed_share,
        )
    )
    connection = Connection(Target.parse(f"{url}/postbacks/mt"))
    policy = Policy(
        answer_timeout=PROVIDER_ANSWER_TIMEOUT_S,
        retry_delay=plan.retry_delay_s,
        max_retries=plan.max_retries,
        drop_answers=plan.drop_answers,
    )
    try:
        return await deliver(
            postbacks,
            PacedSender(connection, plan.rate_per_connection, progress),
            policy,
            seed=plan.seed + index,
            drain=drain,
        )
    finally:
        await connection.close()


async def _supervise(processor: Service, exits: list[int], drill: Drill) -> None:
    """Play the orchestrator: a processor that exits is started again, as a Deployment would."""
    while True:
        code = await processor.wait()
        exits.append(code if code is not None else -1)
        drill.note(f"{processor.name} exited with status {code}; restarted")
        await processor.start()


def probe_body(tracking_id: str) -> bytes:
    return orjson.dumps(
        {
            "origin": "SMS_MT",
            "code": "N202",
            "status": "Delivered",
            "to": "14155550123",
            "tracking-id": tracking_id,
            "timestamp": datetime.now(UTC).isoformat(),
        }
    )


def _probe_id(run: str, partition: int, attempt: int) -> str:
    """A tracking id that Kafka's default partitioner puts in `partition`."""
    for salt in range(10_000):
        candidate = f"PROBE-{run}-{partition}-{attempt}-{salt}"
        if default_partition(candidate.encode(), PARTITIONS) == partition:
            return candidate
    raise AssertionError("no probe id found")  # pragma: no cover - murmur2 spreads keys


async def _probe_until_recovered(
    drill: Drill, timeout: float = 180.0
) -> tuple[list[Delivery], float | None]:
    """Post a probe to every raw partition until each is answered 200 and its event appears.

    Returns every probe sent (for the audit) and the seconds from the repair to recovery.
    """
    assert drill.repaired_at is not None
    run = uuid.uuid4().hex[:6]
    connection = Connection(Target.parse(f"{drill.edge.url}/postbacks/mt"))
    probes: list[Delivery] = []
    waiting: dict[str, int] = {}  # event id of an acknowledged probe -> its partition
    pending = set(range(PARTITIONS))
    reader = _EventReader(drill.cluster.bootstrap_servers, drill.topics["events"])
    await reader.start()
    deadline = time.monotonic() + timeout
    try:
        attempt = 0
        while (pending or waiting) and time.monotonic() < deadline:
            attempt += 1
            for partition in sorted(pending):
                tracking_id = _probe_id(run, partition, attempt)
                body = probe_body(tracking_id)
                postback = Postback(
                    "SMS_MT/N202", "v2_json", "final", tracking_id, body, PROBE_CONTENT_TYPE
                )
                delivery = Delivery(len(probes), postback, attempts=1)
                probes.append(delivery)
                exchange = await connection.post(
                    body, PROBE_CONTENT_TYPE, PROVIDER_ANSWER_TIMEOUT_S
                )
                if exchange.status == 200:
                    delivery.oks = 1
                    delivery.fate = "acked"
                    pending.discard(partition)
                    waiting[event_id(Identity().digest(parse(body)))] = partition
            for seen in await reader.poll():
                waiting.pop(seen, None)
            if pending or waiting:
                await asyncio.sleep(0.5)  # a probe a partition every half second, no faster
    finally:
        await connection.close()
        await reader.stop()
    if pending or waiting:
        return probes, None
    return probes, time.monotonic() - drill.repaired_at


class _EventReader:
    """Reads event ids from the events topic as they commit, from the start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def poll(self) -> list[str]:
        batches = await self._consumer.getmany(timeout_ms=200)
        return [_event_id(record) for records in batches.values() for record in records]

    async def stop(self) -> None:
        await self._consumer.stop()


def _event_id(record: ConsumerRecord[bytes, bytes]) -> str:
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        return str(orjson.loads(record.value or b"").get("event_id"))
    return ""


async def _audit(
    drill: Drill,
    scenario: Scenario,
    runs: list[Run],
    probes: list[Delivery],
    recover_s: float | None,
    exits: list[int],
    started: float,
) -> DrillReport:
    bootstrap = drill.cluster.bootstrap_servers
    services = [drill.edge, drill.metrics, *drill.processors]
    deliveries = [delivery for run in runs for delivery in run.deliveries] + probes
    await _until_processed(bootstrap, drill.topics["raw"], drill.env["PROCESSOR_GROUP_ID"])
    events = await read_all_committed(bootstrap, drill.topics["events"])
    dead_letters = await read_all_committed(bootstrap, drill.topics["dlq"])
    wanted = expectation(deliveries, Identity())
    seen = Counter(_event_id(record) for record in events)
    malformed = _acked_malformed(deliveries)
    dead = Counter(record.value for record in dead_letters)
    counted = await _metrics_counted(drill.metrics, len(events))
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    latencies = [0.0]
    for run in runs:
        statuses.update({str(status): count for status, count in run.statuses.items()})
        failures.update(run.failures)
        latencies.extend(run.latencies)
    return DrillReport(
        scenario=scenario.name,
        acknowledged=len(wanted.expected),
        events=sum(1 for id_ in wanted.expected if seen[id_]),
        duplicates=sum(1 for count in seen.values() if count > 1),
        missing=sum(1 for id_ in wanted.expected if not seen[id_]),
        unexpected=sum(1 for id_ in seen if id_ not in wanted.expected | wanted.unconfirmed),
        dead_letters_expected=len(malformed),
        dead_letters_missing=sum(1 for body in malformed if not dead[body]),
        dead_letters_duplicated=sum(1 for count in dead.values() if count > 1),
        statuses=dict(statuses),
        failures=dict(failures),
        slowest_answer_s=max(latencies),
        recover_s=recover_s,
        metrics_counted=counted,
        events_written=len(events),
        processor_exits=exits,
        edge_starts=drill.edge.starts,
        log_lines={service.name: _lines(service) for service in services},
        lost_exceptions=sum(_lost_exceptions(service) for service in services),
        notes=drill.notes,
        seconds=time.monotonic() - started,
    )


def _lines(service: Service) -> int:
    with service.log_path.open("rb") as log:
        return sum(1 for _ in log)


LOST_EXCEPTIONS: Final = (b"exception was never retrieved", b"KeyError")


def _lost_exceptions(service: Service) -> int:
    """Exceptions nobody handled, which asyncio reports at garbage collection: a fenced or
    rewound transaction must retrieve every delivery it abandons."""
    with service.log_path.open("rb") as log:
        return sum(1 for line in log if any(marker in line for marker in LOST_EXCEPTIONS))


def _acked_malformed(deliveries: Iterable[Delivery]) -> set[bytes]:
    bodies = set()
    for delivery in deliveries:
        if not delivery.oks:
            continue
        try:
            parse(delivery.postback.body, delivery.postback.content_type)
        except Unparseable:
            bodies.add(delivery.postback.body)
    return bodies


async def _until_processed(bootstrap: str, raw: str, group: str) -> None:
    """Until the processor group has committed every raw record (events are then visible)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await committed_total(bootstrap, group, raw) >= await topic_size(bootstrap, raw):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the processors did not catch up with the raw topic within 120 s")


async def _metrics_counted(metrics: Service, events: int, timeout: float = 30.0) -> int:
    """The metrics service's count of events read, once it reached `events` (or timed out);
    read again a moment later, so that a late double count shows too."""
    deadline = time.monotonic() + timeout
    counted = 0
    while time.monotonic() < deadline:
        counted = int(await metrics.metric("postback_events_consumed"))
        if counted >= events:
            break
        await asyncio.sleep(0.2)
    return counted


# ---------------------------------------------------------------------------- the scenarios


async def leader_kill(drill: Drill) -> None:
    """kill -9 the node that leads most raw partitions mid-run; bring it back after traffic
    has met the outage."""
    await drill.progress.until_ok(drill.plan.connections * 60)
    node_id = await drill.cluster.busiest_leader(drill.topics["raw"])
    leaders = await drill.cluster.leaders(drill.topics["raw"])
    led = sum(1 for leader in leaders.values() if leader == node_id)
    await asyncio.to_thread(drill.cluster.node(node_id).kill)
    drill.note(f"kill -9 node {node_id}, leader of {led} of {PARTITIONS} raw partitions")
    await drill.progress.until_more(drill.plan.connections * 30)
    await asyncio.to_thread(drill.cluster.start_node, node_id)
    drill.repaired()


async def rolling_restart(drill: Drill) -> None:
    """Every node in turn stopped cleanly (SIGTERM) and started again, traffic flowing."""
    await drill.progress.until_ok(drill.plan.connections * 30)
    for node_id in drill.cluster.nodes:
        await asyncio.to_thread(drill.cluster.node(node_id).stop)
        await drill.progress.until_more(drill.plan.connections * 5)
        await asyncio.to_thread(drill.cluster.start_node, node_id)
        drill.note(f"node {node_id} stopped and started")
        await drill.progress.until_more(drill.plan.connections * 5)
    drill.repaired()


async def zombie_processor(drill: Drill) -> None:
    """Freeze one of two processors past the session timeout, so that the other takes its
    partitions; thaw it while it still holds an open transaction. It must be fenced and exit."""
    await drill.progress.until_ok(drill.plan.connections * 50)
    first, second = drill.processors
    await _until(lambda: _owns_partitions(first), "the first processor owns partitions")
    owned = (await first.readiness()).get("partitions", [])
    first.pause()
    drill.note(f"{first.name} frozen (SIGSTOP) holding partitions {owned}")
    await _until(lambda: _owns_all(second), f"{second.name} took over every partition")
    drill.note(f"{second.name} owns every partition")
    await drill.progress.until_more(drill.plan.connections * 10)
    starts = first.starts
    first.resume()
    drill.note(f"{first.name} thawed (SIGCONT)")
    await _until(lambda: _restarted(first, starts), f"{first.name} exited", timeout=60)
    drill.repaired()


def long_outage(seconds: float, *, how: str = "freeze") -> Fault:
    """The whole cluster unreachable for `seconds` while every connection keeps posting.

    "freeze": every node SIGSTOPped (connections stay open and nothing answers, as in a
    network partition); "down": every node killed (connections refused, no leader anywhere),
    then started again on its data.
    """
    if how not in ("freeze", "down"):
        raise ValueError(f"how must be 'freeze' or 'down', got {how!r}")

    async def fault(drill: Drill) -> None:
        await drill.progress.until_ok(drill.plan.connections * 50)
        cluster = drill.cluster
        if how == "freeze":
            cluster.pause_all()
        else:
            for node in cluster.nodes.values():
                node.kill()
        drill.note(f"every node {'frozen' if how == 'freeze' else 'killed'} for {seconds:g} s")
        try:
            await asyncio.sleep(seconds)  # the outage's length is the fault itself
        finally:
            if how == "freeze":
                cluster.resume_all()
            else:
                await asyncio.to_thread(cluster.start)
        drill.repaired()

    return fault


async def _owns_partitions(service: Service) -> bool:
    return bool((await service.readiness()).get("partitions"))


async def _owns_all(service: Service) -> bool:
    return len((await service.readiness()).get("partitions", [])) == PARTITIONS


async def _restarted(service: Service, starts: int) -> bool:
    return service.starts > starts


async def _until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 90.0
) -> None:
    """Poll a service's state (HTTP, or the orchestrator's count) until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.2)
