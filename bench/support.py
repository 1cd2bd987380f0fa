"""What every benchmark uses: where results go, the machine and code measured, /proc readers,
percentiles, waiting for servers and for commits, options from a dataclass.

Benchmarks import this module and the shared parts beside it (`stack`, `load`, `bare_loop`,
`restore`), never each other, so that changing one benchmark cannot change another's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import re
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from consumers.instruments import ProcessorMetrics
from consumers.runtime import ProcessorRuntime
from consumers.settings import ProcessorSettings
from testkit.services import sum_samples

ROOT: Final = Path(__file__).resolve().parent.parent
PARTITIONS: Final = 6  # the services' default KAFKA_TOPIC_PARTITIONS: every topic of a run
READER_FETCH_WAIT_MS: Final = 10  # a reader timing records must not add a long poll of its own
PASS_TIMEOUT_S: Final = 600
_PACKAGES: Final = ("starlette", "uvicorn", "uvloop", "httptools", "aiokafka", "orjson")
_SOURCES: Final = ("ingest", "consumers", "common", "devstack", "bench")

T = TypeVar("T")


class BenchError(RuntimeError):
    """The run cannot give trustworthy figures (a non-200 answer, a dead server, no wrk)."""


# ------------------------------------------------------------------------------ results


def result_path(name: str) -> Path:
    """bench/results/<name>.json: gitignored, read back by `python -m bench`."""
    return ROOT / "bench" / "results" / f"{name}.json"


def save(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(**extra: object) -> dict[str, Any]:
    """What a figure was measured on: CPUs, versions, Kafka, the load when the run began."""
    pom = (ROOT / "devstack" / "pom.xml").read_text()
    kafka = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        **{package: version(package) for package in _PACKAGES},
        "kafka": (
            "configured cluster"
            if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
            else (kafka.group(1) if kafka else "unknown")
        ),
        **extra,
        "load_average_at_start": load_average(),
    }


def code_version(*paths: str) -> dict[str, Any]:
    """The commit measured, and which files under `paths` (default: every source folder)
    differed from it, since work trees are shared."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", *(paths or _SOURCES))
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_changes": [line[3:] for line in changed.splitlines() if line.strip()],
    }


# ---------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads, so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already inside user.
    total = sum(values[:8])
    return total - values[3] - values[4], total


def memory_kb(pid: int) -> dict[str, int]:
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


def broker_pid() -> int | None:
    """The Kafka broker this process started (`devstack.kafka.LocalKafka`), if any."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if stat[1] == me and b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


# -------------------------------------------------------------------------------- figures


def percentiles(values: Iterable[float], digits: int = 1) -> dict[str, float]:
    """min, p50, p90, p99 and max of `values` (nearest rank); empty for no values."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], digits)

    return {
        "min": round(ordered[0], digits),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": round(ordered[-1], digits),
    }


# -------------------------------------------------------------------------------- waiting


async def poll(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.01) -> bool:
    """Wait until `condition()` holds (True) or `timeout_s` passed (False). For state that
    offers no event to wait on, such as a runtime's assigned partitions."""
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    accept: Callable[[bytes], bool] = lambda body: True,
) -> bool:
    """Until `url` answers 200 with a body `accept` takes (True), or `timeout_s` passed
    (False). Raises BenchError when the process exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            status, body = http_get(url)
            if status == 200 and accept(body):
                return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------------- Kafka


async def create_topics(bootstrap: str, *names: str) -> None:
    """Topics of PARTITIONS partitions, replication factor 1, for one run."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


@dataclass(frozen=True)
class Pass:
    """One consumption of an input, start of consumption -> every record committed."""

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

    def summary(self) -> dict[str, float]:
        return {
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate),
            "steady_rate": round(self.steady_rate),
        }


class CommitWatcher:
    """A group's committed total on a topic, polled over one admin connection (a client per
    poll, at ten polls a second, would take a noticeable share of the CPU being measured)."""

    POLL_S: Final = 0.1  # 1% resolution on a 10 s pass, little CPU

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
            await asyncio.sleep(self.POLL_S)


# ---------------------------------------------------------------------- an in-process runtime


async def start_runtime(env: dict[str, str]) -> tuple[ProcessorRuntime, CollectorRegistry]:
    """A started (subscribed) processor runtime with a fresh registry; the caller runs it."""
    registry = CollectorRegistry()
    runtime = ProcessorRuntime(ProcessorSettings.from_environ(env), ProcessorMetrics(registry))
    await runtime.start()
    return runtime, registry


def sample_sum(registry: CollectorRegistry, name: str) -> float:
    """Sum of a metric family's samples called `name`, over every label set."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    )


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in Prometheus text whose labels include `labels`."""
    return sum_samples(text, name, labels)


# -------------------------------------------------------------------------------- options


def parse_options(
    name: str, options: type[T], argv: Sequence[str] | None, doc: str | None
) -> tuple[T, Path]:
    """A command line made from a frozen dataclass of options: one `--flag` per field, typed
    and defaulted by the field (a tuple takes several values), plus `--out` for the JSON."""
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{name}", description=(doc or "").splitlines()[0]
    )
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):  # type: ignore[arg-type]  # a dataclass type
        default = field.default
        kind = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        help_ = "default: %(default)s"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_)
        elif isinstance(default, tuple):
            (item,) = set(typing.get_args(kind)) - {Ellipsis}
            parser.add_argument(flag, type=item, nargs="+", default=default, help=help_)
        else:
            (base,) = [t for t in typing.get_args(kind) or (kind,) if t is not type(None)]
            parser.add_argument(flag, type=base, default=default, help=help_)
    parser.add_argument("--out", type=Path, default=result_path(name), help="the JSON report")
    args = vars(parser.parse_args(argv))
    written = args.pop("out")
    values = {name: tuple(v) if isinstance(v, list) else v for name, v in args.items()}
    return options(**values), written


def command(
    name: str,
    options: type[T],
    run: Callable[[T], dict[str, Any]],
    argv: Sequence[str] | None,
    doc: str | None,
    table: Callable[[dict[str, Any]], str] | None = None,
) -> int:
    """A benchmark's `main`: options from the command line, the run, its JSON report written to
    `--out` (default bench/results/<name>.json) and shown as `table` or as JSON. A run that
    cannot give trustworthy figures (BenchError) says why in one line and exits 1."""
    chosen, out = parse_options(name, options, argv, doc)
    try:
        report = run(chosen)
    except BenchError as error:
        print(f"{name} FAILED: {error}", file=sys.stderr)
        return 1
    save(report, out)
    if table is None:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{table(report)}\n\nJSON: {out}")
    return 0
