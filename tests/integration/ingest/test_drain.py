"""SIGTERM under load: readiness drops first, in-flight requests finish, nothing 200 is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from asyncio.subprocess import Process

import httpx
import pytest

from devstack.kafka import free_port
from testkit.kafka_tools import read_records

pytestmark = pytest.mark.kafka


async def wait_ready(client: httpx.AsyncClient, url: str, process: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.returncode is None, "the edge exited during start-up"
        try:
            if (await client.get(url + "/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the edge did not become ready")


async def test_sigterm_under_load_loses_no_acknowledged_postback(
    edge_env: dict[str, str], kafka_bootstrap: str
) -> None:
    """Every postback answered 200 before, during and after SIGTERM is in Kafka."""
    port = free_port()
    env = {
        **os.environ,
        **edge_env,
        "EDGE_PORT": str(port),
        "EDGE_SHUTDOWN_DELAY_SECONDS": "1",
        "EDGE_DRAIN_TIMEOUT_SECONDS": "8",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    acknowledged: list[bytes] = []
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_ready(client, url, process)

            async def provider(connection: int) -> None:
                """One keep-alive connection posting one postback after another, as the provider."""
                async with httpx.AsyncClient(timeout=10) as own:
                    for sequence in range(100_000):
                        body = f'{{"tracking-id":"c{connection}-{sequence}"}}'.encode()
                        try:
                            response = await own.post(url + "/postbacks", content=body)
                        except httpx.TransportError:
                            return  # the edge has closed: the provider would retry later
                        if response.status_code == 200:
                            acknowledged.append(body)
                            if len(acknowledged) == 200:
                                under_load.set()

            under_load = asyncio.Event()
            senders = [asyncio.create_task(provider(n)) for n in range(8)]
            await asyncio.wait_for(under_load.wait(), timeout=30)
            process.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            readiness = await client.get(url + "/readyz")
            assert readiness.status_code == 503
            assert readiness.json()["draining"] is True
            acknowledged_at_signal = len(acknowledged)
            await asyncio.wait_for(asyncio.gather(*senders), timeout=20)
            exit_code = await asyncio.wait_for(process.wait(), timeout=20)
            drained_in = time.monotonic() - signalled_at
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert exit_code in (0, -signal.SIGTERM)
    assert drained_in < 1 + 8 + 1
    assert len(acknowledged) > acknowledged_at_signal, "the shutdown delay should keep serving"
    records = await read_records(kafka_bootstrap, edge_env["KAFKA_TOPIC_RAW"], len(acknowledged))
    stored = {record.value for record in records}
    missing = [body for body in acknowledged if body not in stored]
    assert not missing, f"{len(missing)} acknowledged postbacks are not in Kafka"
