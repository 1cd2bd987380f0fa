"""The HTTP baseline: a Starlette app on the edge's server stack that answers 200 at once.

Run as `python -m bench.bare_app` with BENCH_BARE_APP_PORT set (`bench.stack` does); same
uvicorn options as the edge (uvloop, httptools, no access log), so the difference to the edge is
the edge's own work plus Kafka's round trip.
"""

from __future__ import annotations

import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    await request.body()
    return Response(b"accepted\n", media_type="text/plain")


app = Starlette(
    routes=[
        Route("/postbacks", accept, methods=["POST"]),
        Route("/healthz", lambda request: Response(b"ok"), methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["BENCH_BARE_APP_PORT"]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )
