"""`make run`: Kafka plus every service on loopback, in the foreground; Ctrl-C stops it all.

    postback-pipeline dev run              start the stack (what `make run` does)
    postback-pipeline dev tail TOPIC...    print records of the running stack's topics

(`python -m devstack [run|tail]` is the same.) Set KAFKA_BOOTSTRAP_SERVERS (and the security
settings) to use your own cluster instead of a local broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer

from common.command_line import CommandParser, settings_help
from common.env import SettingsError, Variable, port_number
from common.logs import use_color
from common.topics import TopicSettings
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.cluster import LocalCluster
from devstack.console import Console, banner
from devstack.kafka import LocalKafka, cache_root, die_with_parent, free_port, wait_for_stop_signal

STATE_FILE = cache_root() / "run" / "stack.json"
# Each service's module, the variable holding its port, and the port `make run` prefers.
SERVICES: Final = {
    "edge": ("ingest", "EDGE_PORT", "DEVSTACK_EDGE_PORT", 8080),
    "processor": ("consumers.processor", "PROCESSOR_PORT", "DEVSTACK_PROCESSOR_PORT", 9101),
    "metrics": ("consumers.metrics", "METRICS_PORT", "DEVSTACK_METRICS_PORT", 9102),
}
KAFKA_PORT: Final = ("DEVSTACK_KAFKA_PORT", 19092)
SETTINGS: Final = (
    KAFKA_PORT[0],
    *(preferred for _, _, preferred, _ in SERVICES.values()),
    "DEVSTACK_KAFKA_HEAP",
)
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0


def _port(environ: Mapping[str, str], variable: str, preferred: int) -> int:
    """The port set in `variable`; else the preferred one when free, so README commands work
    as written; any free one else."""
    configured = Variable(variable, port_number, 0).read(environ)
    if configured:
        return configured
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


@contextlib.contextmanager
def kafka(environ: Mapping[str, str], brokers: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    configured = environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured, {}
        return
    if brokers == 3:
        # The topology users deploy: three replicas, two in sync (the services' defaults).
        with LocalCluster(3) as cluster:
            yield cluster.bootstrap_servers, {}
        return
    with LocalKafka(port=_port(environ, *KAFKA_PORT)) as broker:
        # One local broker holds one replica of everything.
        yield broker.bootstrap_servers, {"KAFKA_TOPIC_REPLICATION_FACTOR": "1"}


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S
) -> None:
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


def console_script() -> str:
    """How this shell reaches `postback-pipeline`: by name if PATH finds this one, else by the
    virtualenv's path (relative when below the working directory), else `python -m`."""
    script = Path(sys.executable).with_name("postback-pipeline")
    if not script.exists():
        return f"{sys.executable} -m postback_pipeline"
    if shutil.which("postback-pipeline") == str(script):
        return "postback-pipeline"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _stop(processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every service at once (each drains and leaves its group), then wait."""
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes.values():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_stack(environ: Mapping[str, str], brokers: int = 1) -> int:
    console = Console(sys.stdout, color=use_color(sys.stdout, environ))
    ports = {
        name: _port(environ, variable, port) for name, (_, _, variable, port) in SERVICES.items()
    }
    topics = TopicSettings.from_environ(environ)
    with kafka(environ, brokers) as (bootstrap, kafka_env):
        env = {
            **environ,
            **kafka_env,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            **{own: str(ports[name]) for name, (_, own, _, _) in SERVICES.items()},
            # Locally, show everything the stack ever processed, not just what comes next.
            "METRICS_AUTO_OFFSET_RESET": environ.get("METRICS_AUTO_OFFSET_RESET", "earliest"),
            # Lines for a person, coloured if this terminal is; LOG_FORMAT=json still wins.
            "LOG_FORMAT": environ.get("LOG_FORMAT", "console"),
            # The services write to a pipe; they colour what this terminal can show.
            **({"FORCE_COLOR": "1"} if console.color else {}),
            # Events stay private locally too, with a key that is published (not a secret).
            "EVENTS_PSEUDONYM_KEY": environ.get("EVENTS_PSEUDONYM_KEY", DEVELOPMENT_PSEUDONYM_KEY),
        }
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        processes: dict[str, subprocess.Popen[bytes]] = {}
        relays = []
        try:
            for name, (module, _, _, _) in SERVICES.items():
                processes[name] = process = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    # Ctrl-C reaches this process only: it stops the services before Kafka.
                    process_group=0,
                    preexec_fn=die_with_parent,
                )
                assert process.stdout is not None
                relays.append(console.relay(name, process.stdout))
                wait_until_ready(urls[name] + "/readyz", process)
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_bytes(orjson.dumps({"bootstrap_servers": bootstrap}))
            console.write(
                banner(
                    cli=console_script(),
                    edge_url=urls["edge"],
                    processor_url=urls["processor"],
                    metrics_url=urls["metrics"],
                    bootstrap=bootstrap,
                    topics={"raw": topics.raw.name, "events": topics.events.name},
                    console=console,
                )
            )
            wait_for_stop_signal()
        finally:
            _stop(processes)
            for relay in relays:
                relay.join(timeout=5)
            STATE_FILE.unlink(missing_ok=True)
    return 0


async def tail(topics: Sequence[str], count: int, seconds: float) -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        if not STATE_FILE.exists():
            raise SystemExit(
                "no running stack found: start `make run`, or set KAFKA_BOOTSTRAP_SERVERS"
            )
        bootstrap = orjson.loads(STATE_FILE.read_bytes())["bootstrap_servers"]
    consumer = AIOKafkaConsumer(
        *topics,
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
            records = [record for batch in batches.values() for record in batch]
            for record in records[: count - seen]:
                print(_as_line(record), flush=True)
                seen += 1
    finally:
        await consumer.stop()
    return 0 if seen else 1


def _as_line(record: Any) -> str:
    """A record as one JSON line; bytes as text, undecodable bytes replaced."""
    return orjson.dumps(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.decode(errors="replace") if record.key else None,
            "headers": {name: value.decode(errors="replace") for name, value in record.headers},
            "value": record.value.decode(errors="replace"),
        }
    ).decode()


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description=__doc__,
        epilog=settings_help(SETTINGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", parser_class=CommandParser)
    run_parser = commands.add_parser(
        "run",
        help="start Kafka and every service (the default)",
        description="Kafka and every service on loopback, each service's log lines under its "
        "name; once all are ready, what to try. Ctrl-C stops everything.",
        epilog=settings_help(SETTINGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="one broker (replication 1), or three (replication 3, min ISR 2, as deployed)",
    )
    tail_parser = commands.add_parser(
        "tail",
        help="print topics' records as JSON lines",
        description="Print records of the running stack's topics as JSON lines: topic, "
        "partition, offset, key, headers, value. Reads committed records from the start.",
    )
    tail_parser.add_argument("topic", nargs="+")
    tail_parser.add_argument("--count", type=int, default=10, help="stop after this many")
    tail_parser.add_argument("--timeout", type=float, default=5.0, help="stop after seconds")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m devstack") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.command == "tail":
        return asyncio.run(tail(args.topic, args.count, args.timeout))
    try:
        return run_stack(os.environ, getattr(args, "brokers", 1))
    except SettingsError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while starting: everything started is stopped
        return 130


if __name__ == "__main__":
    sys.exit(main())
