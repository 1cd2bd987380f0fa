"""The pipeline's services as child processes, the way an orchestrator runs them.

A `Service` is `python -m <module>` with its own environment and a log file; it can be
started (and waited on until /readyz says ready), stopped with SIGTERM, killed with SIGKILL,
paused with SIGSTOP and resumed. Tests and fault drills use it where a service must die
without saying goodbye, which an in-process service cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from devstack.kafka import die_with_parent, free_port

MODULES: Final = {
    "edge": ("ingest", "EDGE_PORT"),
    "processor": ("consumers.processor", "PROCESSOR_PORT"),
    "metrics": ("consumers.metrics", "METRICS_PORT"),
}


class ServiceError(AssertionError):
    """A service did not start, or exited when it should not have; the log tail says why."""


class Service:
    """One service process. `start()` may be called again after it exited (a restart)."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path, name: str = "") -> None:
        module, port_variable = MODULES[kind]
        self.kind = kind
        self.name = name or kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{self.name}.log"
        self._argv = [sys.executable, "-m", module]
        self._env = {**os.environ, **env, port_variable: str(self.port)}
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def start(self, timeout: float = 90.0) -> Service:
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv,
                env=self._env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent,  # no service outlives a killed test or benchmark
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise ServiceError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return self
                await asyncio.sleep(0.1)
        raise ServiceError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    async def readiness(self) -> dict[str, Any]:
        """The /readyz document (`{}` when the service does not answer)."""
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                answer = await client.get(f"{self.url}/readyz")
            except httpx.TransportError:
                return {}
        document: dict[str, Any] = orjson.loads(answer.content)
        return document

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{self.url}/metrics")).text
        return sum_samples(text, name, labels)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    async def kill(self) -> None:
        if self.running:
            self._signal(signal.SIGKILL)
        await self.wait()

    async def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. The exit status."""
        if self.running:
            self._signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), timeout)
            except TimeoutError:
                await self.kill()
        return self.returncode

    async def wait(self) -> int | None:
        if self.process is not None:
            await self.process.wait()
        return self.returncode

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def _signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)


def sum_samples(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum the Prometheus text samples of `name` (its `_total` too) matching `labels`."""
    total = 0.0
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric = series.split("{", 1)[0]
        if metric not in (name, f"{name}_total"):
            continue
        if all(label in series for label in wanted):
            total += float(value)
    return total
