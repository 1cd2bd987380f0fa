"""B1: serial postbacks over one keep-alive connection, against its two unavoidable parts.

The provider waits for each answer before sending the next postback, so the edge's ceiling is
1 / (Kafka round trip + HTTP round trip + the edge's own work). Both round trips are measured
here, in the same run, on the same broker and server stack:

- produce: a bare aiokafka `send_and_wait` loop (acks=all, idempotent), one record at a time;
- http: a bare Starlette app on the same uvicorn stack answering 200, driven by the same client.

The ideal is 1 / (1/produce_rate + 1/http_rate); the edge's ratio to it is the figure of merit,
and (1/edge_rate - 1/ideal_rate) is the edge's own time per postback.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench import support
from bench.http_client import post_serially
from bench.stack import Stack
from devstack.kafka import broker_or_configured


@dataclass(frozen=True)
class Options:
    count: int = 3000  # postbacks per round
    rounds: int = 3


def postbacks(count: int, offset: int = 0) -> list[bytes]:
    """Realistic v2 JSON delivery reports (about 300 bytes), each with its own tracking id."""
    return [
        orjson.dumps(
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
        )
        for n in range(count)
    ]


async def produce_rate(bootstrap: str, topic: str, bodies: list[bytes]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        started = time.perf_counter()
        for body in bodies:
            await producer.send_and_wait(topic, body, key=body[-40:])
        return len(bodies) / (time.perf_counter() - started)
    finally:
        await producer.stop()


def http_rate(port: int, bodies: list[bytes]) -> tuple[float, list[float]]:
    elapsed, latencies, statuses = asyncio.run(post_serially(port, bodies))
    if statuses != {200: len(bodies)}:
        raise support.BenchError(f"not every answer was 200: {statuses}")
    return len(bodies) / elapsed, latencies


def run(options: Options) -> dict[str, Any]:
    count, rounds = options.count, options.rounds
    report: dict[str, Any] = {
        "benchmark": "B1 serial postbacks, one keep-alive connection",
        "machine": support.machine(),
        "code": support.code_version(),
    }
    with broker_or_configured() as bootstrap, Stack(bootstrap, "b1") as stack:
        stack.start("edge")
        stack.start("bare_app")
        edge, bare = stack.ports["edge"], stack.ports["bare_app"]
        topic = f"{stack.raw}.baseline"
        asyncio.run(support.create_topics(bootstrap, topic))
        # Untimed: both servers' first requests, and a fresh broker's first thousands of
        # produce requests (its JIT), which made round 1 the edge's best by far.
        http_rate(bare, postbacks(200))
        http_rate(edge, postbacks(count, offset=rounds * count))
        asyncio.run(produce_rate(bootstrap, topic, postbacks(count)))
        samples: dict[str, list[float]] = {"produce": [], "http": [], "edge": []}
        edge_latencies: list[float] = []
        for round_ in range(rounds):
            bodies = postbacks(count, offset=round_ * count)
            samples["produce"].append(asyncio.run(produce_rate(bootstrap, topic, bodies)))
            samples["http"].append(http_rate(bare, bodies)[0])
            rate, latencies = http_rate(edge, bodies)
            samples["edge"].append(rate)
            edge_latencies.extend(latencies)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ideal = 1 / (1 / medians["produce"] + 1 / medians["http"])
    per_round_ratio = [
        e / (1 / (1 / p + 1 / h))
        for p, h, e in zip(samples["produce"], samples["http"], samples["edge"], strict=True)
    ]
    report |= {
        "count_per_round": count,
        "rounds": rounds,
        "rates_per_second": {name: [round(v) for v in values] for name, values in samples.items()},
        "median_rates": {name: round(value) for name, value in medians.items()},
        "ideal_rate": round(ideal),
        "ratio_edge_to_ideal": round(medians["edge"] / ideal, 3),
        "ratio_per_round": [round(r, 3) for r in per_round_ratio],
        "edge_own_microseconds": round((1 / medians["edge"] - 1 / ideal) * 1e6, 1),
        "edge_latency_ms": support.percentiles((s * 1000 for s in edge_latencies), digits=3),
    }
    report["machine"]["load_average_at_end"] = support.load_average()
    return report


def main(argv: list[str] | None = None) -> int:
    return support.command("serial", Options, run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
