"""The edge's HTTP layer (ingest/protocol.py) on a real uvicorn server, and the uvicorn
internals it is built on.

EdgeHttpProtocol subclasses uvicorn's HttpToolsProtocol: it calls uvicorn's parser callbacks,
replaces `data_received` and `on_response_complete` whole, starts pipelined requests with
`_start_asgi_task`, pauses reading through `flow`, and swaps `app` while uvicorn makes a
request's cycle. None of that is uvicorn's public API, so an upgrade may change it without
notice: the first tests fail when it does, the others show the behaviour still holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import inspect
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ingest.answers import Answers
from ingest.instruments import EdgeMetrics
from ingest.protocol import AnswerWriter, HeadLimits, edge_protocol
from ingest.refusals import Refusals
from tests.raw_http import RawConnection

# uvicorn's methods that EdgeHttpProtocol replaces whole, as of the uvicorn in constraints.txt.
# A different digest means uvicorn changed one: carry the change over to ingest/protocol.py (or
# see that it does not matter there), then update the digest here.
REPLACED = {
    "data_received": "010a7ae59a5d3b1a",
    "on_response_complete": "64e254f28e389e76",
}


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_uvicorn_methods_the_protocol_replaces_are_unchanged() -> None:
    """An upgrade that changes uvicorn's own data_received or on_response_complete (say, a new
    piece of bookkeeping) fails here rather than silently missing from the edge."""
    for name, digest in REPLACED.items():
        source = inspect.getsource(getattr(HttpToolsProtocol, name))
        assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
            f"uvicorn changed HttpToolsProtocol.{name}, which EdgeHttpProtocol replaces"
        )


def test_uvicorn_internals_the_protocol_calls_are_there() -> None:
    """The constructor, callbacks and attributes EdgeHttpProtocol uses keep their shape."""
    assert parameters(HttpToolsProtocol.__init__) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ]
    assert parameters(HttpToolsProtocol._start_asgi_task) == ["self", "cycle", "app"]
    assert parameters(HttpToolsProtocol.send_400_response) == ["self", "msg"]
    for callback in ("on_message_begin", "on_headers_complete", "on_message_complete"):
        assert parameters(getattr(HttpToolsProtocol, callback)) == ["self"], callback

    protocol = HttpToolsProtocol(
        uvicorn.Config(echo, log_config=None), ServerState(), {}, asyncio.new_event_loop()
    )
    protocol.loop.close()
    assert isinstance(protocol.pipeline, collections.deque)
    for attribute in ("parser", "app", "cycle", "client", "timeout_keep_alive", "server_state"):
        assert hasattr(protocol, attribute), attribute
    assert {"pause_reading", "resume_reading"} <= set(dir(FlowControl))


def test_the_cycle_uses_only_what_answer_writer_offers() -> None:
    """AnswerWriter stands in for the transport of a request's cycle and implements write,
    close and is_closing only: uvicorn's cycle must use nothing else, and have the flags the
    writer reads."""
    used = set(re.findall(r"self\.transport\.(\w+)", inspect.getsource(RequestResponseCycle)))
    cycle_init = inspect.getsource(RequestResponseCycle.__init__)

    assert used <= {"write", "close", "is_closing"}, used
    assert {"write", "close", "is_closing"} <= set(vars(AnswerWriter))
    for flag in ("self.response_started", "self.response_complete", "self.transport"):
        assert flag in cycle_init, flag


# --- the behaviour on a real server ------------------------------------------------------------


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The application: answers 200 with the body it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body) + 3).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"ok:" + body})


@dataclass
class Served:
    port: int
    registry: CollectorRegistry

    def refused(self, reason: str) -> float:
        value = self.registry.get_sample_value("postback_edge_refusals_total", {"reason": reason})
        return value or 0.0


@contextlib.asynccontextmanager
async def serving(limits: HeadLimits) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    protocol = edge_protocol(Refusals(EdgeMetrics(registry)), Answers(retry_after_s=30), limits)
    config = uvicorn.Config(
        echo,
        host="127.0.0.1",
        port=0,
        http=protocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers a flag, not an event, for "listening"
        if task.done():
            task.result()
            raise RuntimeError("the server exited during start-up")
        await asyncio.sleep(0.01)
    try:
        yield Served(server.servers[0].sockets[0].getsockname()[1], registry)
    finally:
        server.should_exit = True
        await task


LIMITS = HeadLimits(max_header_bytes=1024, header_timeout_s=5.0)


async def test_pipelined_requests_are_answered_in_order_and_a_refusal_after_them() -> None:
    """Requests sent back to back get their answers in order; a refused upgrade among them is
    answered after those before it, reaches no application, and ends the connection."""
    async with serving(LIMITS) as served:
        connection = await RawConnection.open(served.port)
        await connection.send(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"
            b"POST /c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 5\r\n\r\nthree"
        )
        answers = [await connection.answer(5) for _ in range(3)]

        assert [(a.status, a.body) for a in answers if a] == [
            (200, b"ok:one"),
            (200, b"ok:two"),
            (400, b"no protocol upgrades\n"),
        ]
        assert await connection.ended(5)
        assert served.refused("upgrade_refused") == 1


@pytest.mark.parametrize("complete", [False, True])
async def test_a_head_over_the_limit_gets_431_and_the_connection_ends(complete: bool) -> None:
    """Whether the oversized head is still arriving or complete, it is refused with 431."""
    head = b"POST /postbacks HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 2000 + b"\r\n"
    async with serving(LIMITS) as served:
        connection = await RawConnection.open(served.port)
        await connection.send(head + (b"Content-Length: 0\r\n\r\n" if complete else b""))
        answer = await connection.answer(5)

        assert answer is not None
        assert (answer.status, answer.closes) == (431, True)
        assert await connection.ended(5)
        assert served.refused("header_too_large") == 1


async def test_a_stalled_head_gets_408_at_the_header_timeout() -> None:
    """A head that stops arriving is answered 408 once the header timeout passes."""
    async with serving(HeadLimits(max_header_bytes=1024, header_timeout_s=0.2)) as served:
        connection = await RawConnection.open(served.port)
        await connection.send(b"POST /postbacks HTTP/1.1\r\nHost: x\r\n")
        answer = await connection.answer(5)

        assert answer is not None
        assert (answer.status, answer.closes) == (408, True)
        assert served.refused("header_timeout") == 1
