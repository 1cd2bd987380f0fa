"""Runs the real edge (uvicorn, the Kafka publisher) inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from ingest.server import DrainingServer, build_server
from ingest.settings import EdgeSettings


@dataclass
class RunningEdge:
    url: str
    port: int
    registry: CollectorRegistry
    server: DrainingServer
    settings: EdgeSettings

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_edge(env: dict[str, str]) -> AsyncIterator[RunningEdge]:
    settings = EdgeSettings.from_environ({"EDGE_PORT": "0", **env})
    registry = CollectorRegistry()
    server = build_server(settings, registry)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers a flag, not an event, for "listening"
        if serving.done():
            serving.result()
            raise RuntimeError("the edge exited during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningEdge(f"http://127.0.0.1:{port}", port, registry, server, settings)
    finally:
        server.should_exit = True
        await serving


EdgeFactory = Callable[..., contextlib.AbstractAsyncContextManager[RunningEdge]]


@pytest.fixture
def edge_env(base_env: dict[str, str]) -> dict[str, str]:
    return {**base_env, "EDGE_ANSWER_DEADLINE_SECONDS": "2", "EDGE_KAFKA_PROBE_SECONDS": "0.5"}


@pytest.fixture
async def edge(edge_env: dict[str, str]) -> AsyncIterator[RunningEdge]:
    async with running_edge(edge_env) as running:
        yield running


@pytest.fixture
def start_edge(edge_env: dict[str, str]) -> EdgeFactory:
    """For tests that need other settings: `async with start_edge(EDGE_X="y") as edge:`."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[RunningEdge]:
        return running_edge({**edge_env, **{key: str(value) for key, value in overrides.items()}})

    return start


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as http:
        yield http
