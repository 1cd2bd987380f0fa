"""The services and the process baselines as processes, the way `make run` starts them.

Every run gets topics, groups and transactional ids of its own (so runs never meet), free
loopback ports, and log files that a failure quotes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from bench.support import PARTITIONS, ROOT, BenchError, wait_ready
from devstack import DEVELOPMENT_PSEUDONYM_KEY
from devstack.kafka import die_with_parent, free_port

READY_TIMEOUT_S: Final = 90.0


@dataclass(frozen=True)
class Service:
    module: str  # run as `python -m module`
    port_variable: str | None  # the setting its HTTP port is read from; None without HTTP
    ready_path: str = "/readyz"
    partitions_ready: bool = False  # ready also means every partition assigned (and restored)


SERVICES: Final = {
    "edge": Service("ingest", "EDGE_PORT"),
    "processor": Service("consumers.processor", "PROCESSOR_PORT", partitions_ready=True),
    "metrics": Service("consumers.metrics", "METRICS_PORT", partitions_ready=True),
    "bare_app": Service("bench.bare_app", "BENCH_BARE_APP_PORT", ready_path="/healthz"),
    # No HTTP: whoever uses it waits for its group's first commit.
    "bare_loop": Service("bench.bare_loop", None),
    "quix_job": Service("bench.quix_job", None),  # B7's other side; needs the bench extra
}


class Stack:
    """Services of one run. Each gets `env` (os.environ, then this run's settings, then
    `extra`); a service started again keeps its settings, so a processor rejoins its group."""

    def __init__(self, bootstrap: str, tag: str, extra: Mapping[str, str] | None = None) -> None:
        run = f"bench.{tag}.{uuid.uuid4().hex[:8]}"
        self.ports = {
            name: free_port() for name, service in SERVICES.items() if service.port_variable
        }
        self.env: dict[str, str] = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "KAFKA_TOPIC_RAW": f"{run}.raw",
            "KAFKA_TOPIC_EVENTS": f"{run}.events",
            "KAFKA_TOPIC_DLQ": f"{run}.dlq",
            "KAFKA_TOPIC_STATE": f"{run}.state",
            "PROCESSOR_GROUP_ID": run,
            "PROCESSOR_TRANSACTIONAL_ID_PREFIX": run,
            "METRICS_GROUP_ID": f"{run}.metrics",
            "METRICS_AUTO_OFFSET_RESET": "earliest",
            "EVENTS_PSEUDONYM_KEY": DEVELOPMENT_PSEUDONYM_KEY,
            "LOG_LEVEL": "WARNING",
            **{
                variable: str(self.ports[name])
                for name, service in SERVICES.items()
                if (variable := service.port_variable)
            },
            **(extra or {}),
        }
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
        log = open(Path(self._logs.name) / f"{name}.log", "ab")  # noqa: SIM115 - the child's
        with log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", SERVICES[name].module],
                cwd=ROOT,
                env={**self.env, **(extra or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def wait_ready(self, name: str) -> None:
        """Until the service says ready (and, where it applies, owns every partition)."""
        service = SERVICES[name]
        if service.port_variable is None:
            return

        def accept(body: bytes) -> bool:
            if not service.partitions_ready:
                return True
            return len(orjson.loads(body).get("partitions", ())) == PARTITIONS

        try:
            ready = wait_ready(
                self.url(name, service.ready_path), self.processes[name], READY_TIMEOUT_S, accept
            )
        except BenchError as error:
            raise BenchError(f"{name}: {error}\n{self.log_tail(name)}") from None
        if not ready:
            raise BenchError(f"{name} not ready in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail(name)}")

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

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        try:
            for name in list(self.processes):
                self.stop(name)
        finally:
            self._logs.cleanup()
