"""Driving the edge's ASGI parts in a unit test: requests in, answers out, no server.

`MemoryPublisher` is the edge's sink (the narrow `Publisher` protocol) kept in memory, for
what the edge does around Kafka; what reaches a real broker is for tests/integration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

from ingest.records import RawRecord

ALLOWED_CLIENT = "198.51.100.1"


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    received: int  # request messages the app asked for


def http_scope(
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    client: str | None = ALLOWED_CLIENT,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in headers],
        "client": (client, 40000) if client is not None else None,
        "server": ("127.0.0.1", 8080),
    }


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    body: Iterable[bytes] = (b"",),
    headers: Iterable[tuple[bytes, bytes]] = (),
    client: str | None = ALLOWED_CLIENT,
    stall: bool = False,
) -> Answer:
    """One request through `app`: `body` in those chunks, then the client waits (`stall`:
    the last chunk never comes) or, once answered, hangs up."""
    chunks = list(body)
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": stall or index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    answered = asyncio.Event()
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    await app(http_scope(method, path, headers=headers, client=client), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers=dict(start.get("headers", [])),
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        received=received,
    )


@dataclass
class MemoryPublisher:
    """Acknowledges every record at once, unless `outcome` says what happens instead."""

    records: list[RawRecord] = field(default_factory=list)
    # None: acknowledge. An exception: raised. "never": no acknowledgement ever comes.
    outcome: Exception | str | None = None
    up: bool = True
    started: bool = False
    stopped: bool = False

    @property
    def kafka_up(self) -> bool:
        return self.up

    def outage_seconds(self) -> float:
        return 0.0 if self.up else 42.0

    async def start(self) -> None:
        self.started = True

    async def publish(self, record: RawRecord) -> None:
        if self.outcome == "never":
            await asyncio.Event().wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        self.records.append(record)

    async def stop(self, within_s: float) -> None:
        self.stopped = True


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """The app between its lifespan's start-up and shutdown, as a server runs it."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def serve() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)

    running = asyncio.create_task(serve())
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await running
