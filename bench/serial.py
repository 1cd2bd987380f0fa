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

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.http_client import post_serially
from bench.processor import code_version, machine
from bench.report import save
from devstack.kafka import broker_or_configured, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serial.json"


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
    assert statuses == {200: len(bodies)}, statuses
    return len(bodies) / elapsed, latencies


def wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 6, 1)])
    finally:
        await admin.close()


def run(count: int, rounds: int) -> dict[str, Any]:
    with broker_or_configured() as bootstrap:
        suffix = os.urandom(3).hex()
        baseline_topic = f"bench.produce.{suffix}"
        asyncio.run(create_topic(bootstrap, baseline_topic))
        bare_port, edge_port = free_port(), free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TOPIC_RAW": f"bench.raw.{suffix}",
            "EDGE_PORT": str(edge_port),
            "LOG_LEVEL": "WARNING",
        }
        bare = subprocess.Popen([sys.executable, "-m", "bench.bare_app", str(bare_port)], cwd=ROOT)
        edge = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=ROOT, env=env)
        try:
            wait_http(f"http://127.0.0.1:{edge_port}/readyz", edge)
            wait_http(f"http://127.0.0.1:{bare_port}/healthz", bare)
            # Untimed: both servers' first requests, and a fresh broker's first thousands of
            # produce requests (its JIT), which made round 1 the edge's best by far.
            http_rate(bare_port, postbacks(200))
            http_rate(edge_port, postbacks(count, offset=rounds * count))
            asyncio.run(produce_rate(bootstrap, baseline_topic, postbacks(count)))
            samples: dict[str, list[float]] = {"produce": [], "http": [], "edge": []}
            edge_latencies: list[float] = []
            for round_ in range(rounds):
                bodies = postbacks(count, offset=round_ * count)
                samples["produce"].append(
                    asyncio.run(produce_rate(bootstrap, baseline_topic, bodies))
                )
                samples["http"].append(http_rate(bare_port, bodies)[0])
                rate, latencies = http_rate(edge_port, bodies)
                samples["edge"].append(rate)
                edge_latencies.extend(latencies)
        finally:
            for process in (bare, edge):
                process.terminate()
                process.wait(30)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ideal = 1 / (1 / medians["produce"] + 1 / medians["http"])
    per_round_ratio = [
        e / (1 / (1 / p + 1 / h))
        for p, h, e in zip(samples["produce"], samples["http"], samples["edge"], strict=True)
    ]
    edge_latencies.sort()
    return {
        "benchmark": "B1 serial postbacks, one keep-alive connection",
        "count_per_round": count,
        "rounds": rounds,
        "rates_per_second": {name: [round(v) for v in values] for name, values in samples.items()},
        "median_rates": {name: round(value) for name, value in medians.items()},
        "ideal_rate": round(ideal),
        "ratio_edge_to_ideal": round(medians["edge"] / ideal, 3),
        "ratio_per_round": [round(r, 3) for r in per_round_ratio],
        "edge_own_microseconds": round((1 / medians["edge"] - 1 / ideal) * 1e6, 1),
        "edge_latency_ms": {
            "p50": round(edge_latencies[len(edge_latencies) // 2] * 1000, 3),
            "p99": round(edge_latencies[int(len(edge_latencies) * 0.99)] * 1000, 3),
        },
        "machine": {**machine(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "code": code_version(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = run(args.count, args.rounds)
    save(report, args.out)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
