"""The scripted HTTP server the simulator's tests post to.

`ScriptedServer` listens on 127.0.0.1, port 0, and answers request number n (counted from 0
across connections) as `script(n, request)` says: a status code, SILENT (never answer: the
client's deadline must fire), HANG_UP (close without answering), or `Raw` bytes. It records
every request, so a test asserts on what actually crossed the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

SILENT: Final = "silent"
HANG_UP: Final = "hang-up"


@dataclass(frozen=True)
class Raw:
    """Bytes written as the answer; `close` ends the connection after them."""

    data: bytes
    close: bool = False


Action = int | Literal["silent", "hang-up"] | Raw


@dataclass(frozen=True)
class Request:
    number: int
    connection: int
    at: float  # time.monotonic() when the whole request had arrived
    path: str
    headers: dict[str, str]
    body: bytes


Script = Callable[[int, Request], Action]


def in_turn(*actions: Action, then: Action = 200) -> Script:
    """The n-th request gets the n-th action; every later one gets `then`."""
    return lambda number, _request: actions[number] if number < len(actions) else then


def refuse_first_postback(status: int = 503) -> Script:
    """`status` for every copy of the first body received, 200 for the rest, whatever the order
    in which retries and fresh postbacks interleave."""
    first: list[bytes] = []

    def answer(_number: int, request: Request) -> Action:
        if not first:
            first.append(request.body)
        return status if request.body == first[0] else 200

    return answer


class ScriptedServer:
    def __init__(self, script: Script | None = None, *, close_after_answer: bool = False) -> None:
        self.script: Script = script or in_turn()
        self.close_after_answer = close_after_answer
        self.requests: list[Request] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/postbacks/mt"

    def bodies(self) -> list[bytes]:
        return [request.body for request in self.requests]

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # handlers see the end of their connection and return
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        connection = self.connections
        try:
            while request := await _read_request(reader, len(self.requests), connection):
                self.requests.append(request)
                action = self.script(request.number, request)
                if action == SILENT:
                    await reader.read()  # until the client gives up and hangs up
                    return
                if action == HANG_UP:
                    return
                if isinstance(action, Raw):
                    writer.write(action.data)
                    await writer.drain()
                    if action.close:
                        return
                    continue
                assert isinstance(action, int)
                close = b"Connection: close\r\n" if self.close_after_answer else b""
                writer.write(
                    f"HTTP/1.1 {action} X\r\nContent-Length: 2\r\n".encode() + close + b"\r\nok"
                )
                await writer.drain()
                if self.close_after_answer:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def _read_request(
    reader: asyncio.StreamReader, number: int, connection: int
) -> Request | None:
    line = await reader.readline()
    if not line:
        return None
    _, path, _ = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = header.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(number, connection, time.monotonic(), path, headers, body)


def gaps(times: Sequence[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]
