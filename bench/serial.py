"""B1: serial postbacks over one keep-alive connection, against its two unavoidable parts.

The provider waits for each answer before sending the next postback, so the edge's ceiling is
1 / (Kafka round trip + HTTP round trip + the edge's own work). Both round trips are measured
here, in the same run, on the same broker and server stack:

- produce: a bare aiokafka `send_and_wait` loop with the edge's producer options (acks=all,
  idempotent, its linger) on its event loop (uvloop), one record at a time, each the record
  the edge writes for that postback: the same key (the tracking id, `ingest.keys`),
  partition, headers and body (`ingest.records.build_record`, with the facts the edge sees).
  Left out is only the edge's own work (reading the request, building the record): what the
  figure measures.
- http: a bare Starlette app on the same uvicorn stack answering 200, driven by the same client.

Two clients post, each to the bare app and to the edge: the bench's own (`bench.http_client`)
and the provider simulator's serial mode (`simulator.delivery.deliver` over one
`simulator.connection.Connection`), so the reader sees whether the client limits the figure.
For each client the ideal is 1 / (1/produce_rate + 1/http_rate), the edge's ratio to it is the
figure of merit, and (1/edge_rate - 1/ideal_rate) is the edge's own time per postback.

Afterwards every record the edge stored is compared with the baseline's record of the same
body (key, partition, header names): the run fails if the baseline stopped being the edge's.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import uvloop
from aiokafka import AIOKafkaProducer

from bench import support
from bench.http_client import USER_AGENT, post_serially
from bench.stack import Stack
from common.partitioning import default_partition
from common.raw_record import DEFAULT_SOURCE
from devstack.kafka import broker_or_configured
from ingest.guards import RequestIds
from ingest.records import RawRecord, build_record
from ingest.settings import EdgeSettings
from simulator.connection import Connection, Target
from simulator.delivery import Policy, deliver
from simulator.mix import Postback
from testkit.kafka_tools import read_all_committed

PATH: Final = "/postbacks"  # the only route of the bare app; the edge's default source
CONTENT_TYPE: Final = "application/json"

Timing = tuple[float, list[float], dict[int, int]]  # seconds, latencies (s), status counts
Client = Callable[[int, Sequence[Postback]], Coroutine[Any, Any, Timing]]


@dataclass(frozen=True)
class Options:
    count: int = 3000  # postbacks per round and client
    rounds: int = 3


def postbacks(count: int, offset: int = 0) -> list[Postback]:
    """Realistic v2 JSON delivery reports (about 300 bytes), each with its own tracking id."""
    return [
        Postback(
            kind="MMS_MT/N102",
            wire="v2_json",
            stage="final",
            tracking_id=f"TU1TXz{offset + n:010d}",
            body=orjson.dumps(
                {
                    "origin": "MMS_MT",
                    "code": "N102",
                    "status": "Delivered",
                    "status-details": "Message Delivered",
                    "sent-as": "MMS",
                    "from": "60856",
                    "to": f"1774319{n % 10000:04d}",
                    "tracking-id": f"TU1TXz{offset + n:010d}",
                    "client-reference": f"order-{n}",
                    "operator-id": "0001470",
                    "operator-name": "T-Mobile USA",
                    "timestamp": "2024-03-05T14:23:12.990498+00:00",
                }
            ),
            content_type=CONTENT_TYPE,
        )
        for n in range(count)
    ]


# -------------------------------------------------------------------------------- clients


async def bench_client(port: int, postbacks: Sequence[Postback]) -> Timing:
    return await post_serially(port, [p.body for p in postbacks], PATH)


async def simulator_client(port: int, postbacks: Sequence[Postback]) -> Timing:
    """The simulator's serial delivery; no retries, so a refusal shows as a status."""
    connection = Connection(Target.parse(f"http://127.0.0.1:{port}{PATH}"))
    try:
        run = await deliver(postbacks, connection, Policy(max_retries=0))
    finally:
        await connection.close()
    return run.elapsed, run.latencies, dict(run.statuses)


CLIENTS: Final[dict[str, Client]] = {"bench": bench_client, "simulator": simulator_client}


def http_rate(
    client: Client, port: int, postbacks: Sequence[Postback]
) -> tuple[float, list[float]]:
    """Postbacks/s and latencies of one client, in an event loop of its own (asyncio's: the
    simulator's command line runs on it)."""
    elapsed, latencies, statuses = asyncio.run(client(port, postbacks))
    if statuses != {200: len(postbacks)}:
        raise support.BenchError(f"not every answer was 200: {statuses}")
    return len(postbacks) / elapsed, latencies


# ------------------------------------------------------------------------------- baseline


class Baseline:
    """The edge's Kafka round trip alone: its records, its producer options, its event loop
    (uvloop), one record at a time."""

    def __init__(self, bootstrap: str, topic: str, edge: EdgeSettings) -> None:
        self._bootstrap, self._topic, self._linger_ms = bootstrap, topic, edge.linger_ms
        self._request_ids = RequestIds()  # the edge's own request-id scheme

    def _records(self, postbacks: Sequence[Postback]) -> list[RawRecord]:
        """What the edge writes for these postbacks from the bench client."""
        now_ms = time.time_ns() // 1_000_000
        return [
            build_record(
                p.body,
                source=DEFAULT_SOURCE,
                received_at_ms=now_ms,
                client_addr="127.0.0.1",
                request_id=self._request_ids.next(),
                content_type=p.content_type.encode(),
                user_agent=USER_AGENT,
            )
            for p in postbacks
        ]

    def rate(self, postbacks: Sequence[Postback]) -> float:
        """Records/s after the first, which opens the producer's connections. The records are
        built before the clock starts: building them is the edge's own work."""
        return uvloop.run(self._rate(self._records(postbacks)))

    async def _rate(self, records: Sequence[RawRecord]) -> float:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
        )
        await producer.start()
        try:
            started = 0.0
            for n, record in enumerate(records):
                if n == 1:
                    started = time.perf_counter()
                await producer.send_and_wait(
                    self._topic,
                    record.value,
                    key=record.key,
                    partition=default_partition(record.key, support.PARTITIONS),  # the edge's
                    headers=record.headers,
                    timestamp_ms=record.timestamp_ms,
                )
            return (len(records) - 1) / (time.perf_counter() - started)
        finally:
            await producer.stop()


async def compare(bootstrap: str, baseline: str, raw: str) -> dict[str, Any]:
    """Every edge record against the baseline's record of the same body; raises on a
    difference in key, partition or header names."""
    ours = {r.value: r for r in await read_all_committed(bootstrap, baseline)}
    stored = await read_all_committed(bootstrap, raw)
    compared = 0
    for record in stored:
        twin = ours.get(record.value)
        if twin is None:  # a warm-up body the baseline never sent
            continue
        edge = (record.key, record.partition, [name for name, _ in record.headers])
        base = (twin.key, twin.partition, [name for name, _ in twin.headers])
        if edge != base:
            raise support.BenchError(
                f"the baseline's record differs from the edge's: {edge} != {base}"
            )
        compared += 1
    if not compared:
        raise support.BenchError(f"no record of {raw} has a twin in {baseline}")

    def spread(records: Sequence[Any]) -> list[int]:
        counts = Counter(r.partition for r in records)
        return [counts[p] for p in range(support.PARTITIONS)]

    return {
        "edge_records_compared": compared,
        "same_key_partition_and_header_names": True,
        "header_names": [name for name, _ in stored[-1].headers] if stored else [],
        "records_per_partition": {"baseline": spread(list(ours.values())), "edge": spread(stored)},
        "mean_value_bytes": round(statistics.fmean(len(v) for v in ours), 1) if ours else 0,
    }


# ------------------------------------------------------------------------------------ run


def figures(produce: list[float], http: list[float], edge: list[float]) -> dict[str, Any]:
    """The edge's ratio to the ideal 1 / (1/produce + 1/http), medians and per round."""
    p, h, e = (statistics.median(values) for values in (produce, http, edge))
    ideal = 1 / (1 / p + 1 / h)
    return {
        "ideal_rate": round(ideal),
        "ratio_edge_to_ideal": round(e / ideal, 3),
        "ratio_per_round": [
            round(e_ * (1 / p_ + 1 / h_), 3) for p_, h_, e_ in zip(produce, http, edge, strict=True)
        ],
        "edge_own_microseconds": round((1 / e - 1 / ideal) * 1e6, 1),
    }


def rounds(
    options: Options, stack: Stack, baseline: Baseline
) -> tuple[dict[str, list[float]], list[float]]:
    """Rates per round (produce; http and edge per client) and the edge's latencies."""
    count = options.count
    edge, bare = stack.ports["edge"], stack.ports["bare_app"]
    samples: dict[str, list[float]] = {"produce": []}
    latencies: list[float] = []
    # Untimed: both servers' first requests, and a fresh broker's first thousands of produce
    # requests (its JIT), which made round 1 the edge's best by far.
    for client in CLIENTS.values():
        http_rate(client, bare, postbacks(200, offset=-200))
        http_rate(client, edge, postbacks(count // 2, offset=(options.rounds + 1) * count))
    baseline.rate(postbacks(count, offset=(options.rounds + 2) * count))
    for round_ in range(options.rounds):
        bodies = postbacks(count, offset=round_ * count)
        samples["produce"].append(baseline.rate(bodies))
        for name, client in CLIENTS.items():
            suffix = "" if name == "bench" else f"_{name}"
            http, _ = http_rate(client, bare, bodies)
            rate, answered = http_rate(client, edge, bodies)
            samples.setdefault(f"http{suffix}", []).append(http)
            samples.setdefault(f"edge{suffix}", []).append(rate)
            if name == "bench":
                latencies.extend(answered)
    return samples, latencies


def run(options: Options) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "B1 serial postbacks, one keep-alive connection",
        "machine": support.machine(),
        "code": support.code_version(),
    }
    with broker_or_configured() as bootstrap, Stack(bootstrap, "b1") as stack:
        stack.start("edge")
        stack.start("bare_app")
        topic = f"{stack.raw}.baseline"
        asyncio.run(support.create_topics(bootstrap, topic))
        baseline = Baseline(bootstrap, topic, EdgeSettings.from_environ(stack.env))
        samples, latencies = rounds(options, stack, baseline)
        report["baseline_check"] = asyncio.run(compare(bootstrap, topic, stack.raw))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    report |= {
        "count_per_round": options.count,
        "rounds": options.rounds,
        "rates_per_second": {name: [round(v) for v in values] for name, values in samples.items()},
        "median_rates": {name: round(value) for name, value in medians.items()},
        **figures(samples["produce"], samples["http"], samples["edge"]),
        "simulator_client": figures(
            samples["produce"], samples["http_simulator"], samples["edge_simulator"]
        ),
        "edge_latency_ms": support.percentiles((s * 1000 for s in latencies), digits=3),
    }
    report["machine"]["load_average_at_end"] = support.load_average()
    return report


def main(argv: list[str] | None = None) -> int:
    return support.command("serial", Options, run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
