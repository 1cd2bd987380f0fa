"""What integration tests of several services share: services run as child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import IO, Self

import httpx
import pytest

from devstack.kafka import die_with_parent, free_port


class ServiceProcess:
    """`python -m <module>` as a child process on a free port, ready once /readyz says 200.

    `output`, when given, receives the service's stdout and stderr (its log lines).
    """

    module = "consumers.processor"
    port_variable = "PROCESSOR_PORT"

    def __init__(self, env: dict[str, str], output: IO[bytes] | None = None) -> None:
        self.port = free_port()
        self._env = {**os.environ, **env, self.port_variable: str(self.port)}
        self._output = output
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Self:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            env=self._env,
            stdout=self._output,
            stderr=None if self._output is None else asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,  # no service outlives a killed test run
        )
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert self.process.returncode is None, f"{self.module} exited at start-up"
                with contextlib.suppress(httpx.TransportError):
                    if (
                        await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.module} did not become ready")

    async def kill(self) -> None:
        """SIGKILL: no commit, no goodbye to the group, an open transaction left behind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=30)


@pytest.fixture
async def processes() -> AsyncIterator[list[ServiceProcess]]:
    """Processes a test starts are stopped at its end, whatever happened."""
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        if process.process is not None and process.process.returncode is None:
            process.process.kill()
            await process.process.wait()
