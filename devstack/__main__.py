"""`make run`: Kafka plus every service on loopback, in the foreground; Ctrl-C stops it all.

    python -m devstack            start the stack (what `make run` does)
    python -m devstack tail TOPIC print records of a topic of the running stack as JSON lines

Set KAFKA_BOOTSTRAP_SERVERS to use your own cluster instead of a local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import orjson
from aiokafka import AIOKafkaConsumer

from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.kafka import LocalKafka, cache_root, free_port, wait_for_stop_signal

STATE_FILE = cache_root() / "run" / "stack.json"


def _port(variable: str, preferred: int) -> int:
    """The preferred port when free, so README commands work as written; any free one else."""
    if os.environ.get(variable):
        return int(os.environ[variable])
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


@contextlib.contextmanager
def kafka() -> Iterator[tuple[str, dict[str, str]]]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, {}
        return
    with LocalKafka(port=_port("DEVSTACK_KAFKA_PORT", 19092)) as broker:
        # One local broker holds one replica of everything.
        yield broker.bootstrap_servers, {"KAFKA_TOPIC_REPLICATION_FACTOR": "1"}


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a service exited at start-up (status {process.returncode})")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310 - loopback URL
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready within {timeout:.0f} s")


def run_stack() -> int:
    with kafka() as (bootstrap, kafka_env):
        edge_port = _port("DEVSTACK_EDGE_PORT", 8080)
        processor_port = _port("DEVSTACK_PROCESSOR_PORT", 9101)
        metrics_port = _port("DEVSTACK_METRICS_PORT", 9102)
        env = {
            **os.environ,
            **kafka_env,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "EDGE_PORT": str(edge_port),
            "PROCESSOR_PORT": str(processor_port),
            "METRICS_PORT": str(metrics_port),
            # Locally, show everything the stack ever processed, not just what comes next.
            "METRICS_AUTO_OFFSET_RESET": os.environ.get("METRICS_AUTO_OFFSET_RESET", "earliest"),
            # Events stay private locally too, with a key that is published (not a secret).
            "EVENTS_PSEUDONYM_KEY": os.environ.get(
                "EVENTS_PSEUDONYM_KEY", DEVELOPMENT_PSEUDONYM_KEY
            ),
        }
        services = {
            "edge": ([sys.executable, "-m", "ingest"], f"http://127.0.0.1:{edge_port}"),
            "processor": (
                [sys.executable, "-m", "consumers.processor"],
                f"http://127.0.0.1:{processor_port}",
            ),
            "metrics": (
                [sys.executable, "-m", "consumers.metrics"],
                f"http://127.0.0.1:{metrics_port}",
            ),
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, (command, base_url) in services.items():
                processes[name] = subprocess.Popen(command, env=env)
                wait_until_ready(base_url + "/readyz", processes[name])
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_bytes(orjson.dumps({"bootstrap_servers": bootstrap}))
            print(
                "\npostback-pipeline is running (Ctrl-C stops everything)\n"
                f"  edge:    http://127.0.0.1:{edge_port}/postbacks[/<source>]\n"
                f"  metrics: http://127.0.0.1:{edge_port}/metrics  (edge)\n"
                f"           http://127.0.0.1:{processor_port}/metrics  (processor)\n"
                f"           http://127.0.0.1:{metrics_port}/metrics  (events, for dashboards)\n"
                f"  kafka:   {bootstrap}\n",
                flush=True,
            )
            wait_for_stop_signal()
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            STATE_FILE.unlink(missing_ok=True)
    return 0


async def tail(topic: str, count: int, seconds: float) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        if not STATE_FILE.exists():
            raise SystemExit(
                "no running stack found: start `make run`, or set KAFKA_BOOTSTRAP_SERVERS"
            )
        bootstrap = orjson.loads(STATE_FILE.read_bytes())["bootstrap_servers"]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    seen = 0
    try:
        deadline = time.monotonic() + seconds
        while seen < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    print(
                        orjson.dumps(
                            {
                                "partition": record.partition,
                                "offset": record.offset,
                                "key": record.key.decode(errors="replace") if record.key else None,
                                "headers": {
                                    name: value.decode(errors="replace")
                                    for name, value in record.headers
                                },
                                "value": record.value.decode(errors="replace"),
                            }
                        ).decode(),
                        flush=True,
                    )
                    seen += 1
    finally:
        await consumer.stop()
    return 0 if seen else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    tail_parser = commands.add_parser("tail", help="print a topic's records as JSON lines")
    tail_parser.add_argument("topic")
    tail_parser.add_argument("--count", type=int, default=10, help="stop after this many")
    tail_parser.add_argument("--timeout", type=float, default=5.0, help="stop after seconds")
    args = parser.parse_args(argv)
    if args.command == "tail":
        return asyncio.run(tail(args.topic, args.count, args.timeout))
    return run_stack()


if __name__ == "__main__":
    sys.exit(main())
