"""The operational HTTP face of a consumer service: /healthz, /readyz and /metrics.

Consumer services have no request path of their own, so this small app runs beside their
Kafka loop in the same event loop, served by uvicorn's `serve()` as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Whether the service is ready, and details /readyz shows to explain a "not ready".
ReadinessCheck = Callable[[], tuple[bool, dict[str, object]]]


def json_response(status: int, document: dict[str, object]) -> Response:
    return Response(orjson.dumps(document), status, media_type="application/json")


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def ops_app(registry: CollectorRegistry, readiness: ReadinessCheck) -> Starlette:
    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "alive"})

    async def readyz(request: Request) -> Response:
        ready, details = readiness()
        return json_response(200 if ready else 503, {"ready": ready, **details})

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _SignalFreeServer(uvicorn.Server):
    """The service owns SIGTERM (finish the transaction, leave the group), not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    """uvicorn serving `ops_app` inside the service's loop; signals stay with the service."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,
        )
        self._server = _SignalFreeServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="ops-http")
        while not self._server.started:  # uvicorn exposes a flag, not an event
            if self._task.done():
                self._task.result()
                raise RuntimeError("the ops HTTP server exited at start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
