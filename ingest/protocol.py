"""uvicorn's httptools protocol with the limits httptools leaves to its user.

uvicorn bounds neither how large nor how slow a request head may be when it runs httptools
(`h11_max_incomplete_event_size` is for h11 only, and its keep-alive timer only runs between
answered requests), and it starts the application on a request that asks for a protocol
upgrade while httptools stops framing the request there. Per connection, this protocol:

- answers 431 (`header_too_large`) to a request head (request line and header fields) over
  `max_header_bytes`: to one still arriving once the reads that brought it exceed the limit
  (bytes that came in the same read as the end of the previous request are not counted, so
  it may pass the limit by one read), to a complete one if its fields add up to more. Memory
  per connection stays bounded by the head and body limits;
- times the head: from the connection's start, and from each later request's first byte,
  the head must be complete within `header_timeout_s`, else 408 (`header_timeout`). The same
  time bounds the unread rest of a request answered before its body was read (a 401, a 404):
  then the connection is closed. A slow client holds one of EDGE_MAX_CONNECTIONS for a bounded
  time only, however steadily it trickles;
- refuses a request that asks for an upgrade (`Connection: Upgrade` with `Upgrade`, or
  CONNECT) with 400 (`upgrade_refused`): httptools skips the body of such a request and hands
  what follows to "the new protocol", so the application would see an empty body, and the
  body would be parsed as the next request. Nothing after such a head is read.

These answers close the connection, are recorded (counted and logged) by ingest/refusals.py
like every refusal, and come after the answers to earlier (pipelined) requests on the
connection.

Two things for speed, as the edge answers many small requests: uvicorn arms and cancels a
keep-alive timer per request, and writes an answer's head and body with a send(2) (and a TCP
segment, and a wake-up of the client) each. Here one timer per connection checks, every
`header_timeout_s`, both the head and the keep-alive timeouts (`timeout_keep_alive`, so an idle
connection closes up to `header_timeout_s` late), and an answer's writes leave as one once it
is complete (`AnswerWriter`).

None of what this builds on is uvicorn's public API: `HttpToolsProtocol`'s constructor and
parser callbacks (called through `super()`), its `pipeline`, `flow`, `cycle` and
`_start_asgi_task`, its `app` (swapped while uvicorn makes a refused request's cycle), and the
transport calls `RequestResponseCycle` makes (`AnswerWriter` offers only those); its
`data_received` and `on_response_complete` are replaced whole. tests/unit/ingest/test_protocol.py
pins all of it (the replaced methods by a digest of their source) and fails on a uvicorn
upgrade that changes any of it.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ingest.answers import Answers
from ingest.outcomes import Outcome
from ingest.refusals import Refusals


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_header_bytes: int
    header_timeout_s: float


class EdgeHttpProtocol(HttpToolsProtocol):
    """Made per server by `edge_protocol`, which sets the class attributes."""

    limits: ClassVar[HeadLimits]
    refusals: ClassVar[Refusals]
    answers: ClassVar[Answers]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # A head is being read: from the connection's start, and from each later request's
        # first byte, to the end of its header fields.
        self._in_head = True
        # Bytes of the reads that arrived while a head was being read: at most the head's size
        # (a read that ends a head is counted whole, but then the head is complete)...
        self._head_bytes = 0
        # ... and at least it: with the read in which the head began, whole.
        self._head_bound = 0
        self._read_bytes = 0
        self._message_complete = True
        # Since when the connection reads bytes no application waits for (a head, or the rest
        # of an answered request), and since when it is idle between requests; None: it isn't.
        self._waiting_since: float | None = None
        self._idle_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Set once an answer that closes the connection is decided: input is ignored from then.
        self._refusing = False
        self._pending_refusal: Outcome | None = None
        self._unflushed: AnswerWriter | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it
        self._waiting_since = self.loop.time()
        self._timer = self.loop.call_at(
            self._waiting_since + self.limits.header_timeout_s, self._check_times
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with the head counted, and upgrades refused rather than logged.
        if self._refusing:
            return
        self._read_bytes = len(data)
        if self._in_head:
            self._head_bytes += self._read_bytes
            self._head_bound += self._read_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # refused in on_headers_complete; nothing after the head is read
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(Outcome.HEADER_TOO_LARGE)

    # httptools callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_complete = False
        self._idle_since = None
        if not self._in_head:  # a later request on this connection: its head starts now
            self._in_head = True
            self._head_bytes = 0
            self._head_bound = self._read_bytes
            self._waiting_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._waiting_since = None
        limit = self.limits.max_header_bytes
        if self.parser.should_upgrade():
            refusal = Outcome.UPGRADE_REFUSED
            upgrade = dict(self.headers).get(b"upgrade", b"").decode("latin-1")[:64]
            detail = f"upgrade {upgrade!r}" if upgrade else "CONNECT"
        elif self._head_bound > limit and (size := self._head_size()) > limit:
            refusal = Outcome.HEADER_TOO_LARGE
            detail = f"head of {size} bytes, over {limit}"
        else:
            super().on_headers_complete()
            self.cycle.transport = AnswerWriter(self.transport, self.cycle, self)
            return
        # The request runs through uvicorn as usual (after any pipelined ones), but the
        # refusal answers it instead of the application, and closes the connection.
        self._refusing = True
        application = self.app
        self.app = functools.partial(self._answer_refused, outcome=refusal, detail=detail)
        try:
            super().on_headers_complete()
        finally:
            self.app = application

    def on_message_complete(self) -> None:
        self._message_complete = True
        if self._waiting_since is not None and not self._in_head:
            # The rest of a request answered early has come: idle from now on.
            self._waiting_since = None
            self._idle_since = self.loop.time()
        super().on_message_complete()

    # the request's cycle calls this when its answer is complete
    def on_response_complete(self) -> None:
        # uvicorn's, without its keep-alive timer per request (see _check_times).
        if self._unflushed is not None:
            self._unflushed.flush()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return  # its answer (and those after it) come first
        if self._pending_refusal is not None:
            self._answer_and_close(self._pending_refusal)
        elif self._refusing:
            self.transport.close()  # e.g. uvicorn's own 503 over EDGE_MAX_CONNECTIONS
        elif self._in_head:
            pass  # the next request's head is under way, and timed
        elif self._message_complete:
            self._idle_since = self.loop.time()
        else:
            self._waiting_since = self.loop.time()  # answered before its body was read

    def send_400_response(self, msg: str) -> None:
        if self._unflushed is not None:
            self._unflushed.flush()  # an answer written before comes first
        super().send_400_response(msg)

    # the limits
    def _head_size(self) -> int:
        """The complete head's size, as its parts add up (line ends and colons included)."""
        fields = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n\r\n") + fields

    def _check_times(self) -> None:
        """Every `header_timeout_s`, or when a wait is due: the head and keep-alive timeouts.

        The timer never fires later than `header_timeout_s` from now, so a wait that starts
        between two checks is still caught on time (the next check moves to its due time).
        """
        self._timer = None
        if self._refusing or self.transport.is_closing():
            return
        now = self.loop.time()
        timeout = self.limits.header_timeout_s
        since = self._waiting_since
        if since is not None and now >= since + timeout:
            if self._in_head:
                self._refuse(Outcome.HEADER_TIMEOUT)
            else:
                self.transport.close()  # its answer is out; the rest of its body never came
            return
        idle = self._idle_since
        if idle is not None and now >= idle + self.timeout_keep_alive:
            self.transport.close()
            return
        self._timer = self.loop.call_at(
            since + timeout if since is not None else now + timeout, self._check_times
        )

    def _refuse(self, outcome: Outcome) -> None:
        """Answer `outcome` and close, once the answers under way on this connection are out."""
        self._refusing = True
        self.flow.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self._answer_and_close(outcome)
        else:
            self._pending_refusal = outcome

    def _answer_and_close(self, outcome: Outcome) -> None:
        """Refuse a request whose head never completed: no ASGI request exists to answer."""
        if outcome is Outcome.HEADER_TIMEOUT:
            detail = f"head not complete within {self.limits.header_timeout_s} s"
        else:
            detail = f"{self._head_bytes} bytes of head read, over {self.limits.max_header_bytes}"
        self.refusals.record(
            outcome, None, client=self.client[0] if self.client else None, detail=detail
        )
        self.transport.write(self.answers.wire(outcome))
        self.transport.close()

    async def _answer_refused(
        self, scope: Scope, receive: Receive, send: Send, *, outcome: Outcome, detail: str
    ) -> None:
        """Answer a request with `outcome` instead of the application."""
        self.refusals.record(outcome, scope, detail=detail)
        await self.answers.send(send, outcome)


class AnswerWriter(asyncio.Transport):
    """The transport as one request's cycle sees it: the writes of its answer leave as one.

    While the answer is under way (started, not complete) writes are held; the protocol
    flushes them when the answer completes, and closing flushes first. What is written outside
    an answer (`100 Continue`) goes at once. uvicorn's cycle uses `write`, `close` and
    `is_closing` only. The edge's answers are small and whole: none is streamed.
    """

    __slots__ = ("_cycle", "_held", "_protocol", "_transport")

    def __init__(
        self, transport: asyncio.Transport, cycle: RequestResponseCycle, protocol: EdgeHttpProtocol
    ) -> None:
        super().__init__()
        self._transport = transport
        self._cycle = cycle
        self._protocol = protocol
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        cycle = self._cycle
        if cycle.response_started and not cycle.response_complete:
            if self._held is None:
                self._held = bytes(data)
                self._protocol._unflushed = self
            else:
                self._held += data
            return
        self.flush()
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._protocol._unflushed = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def edge_protocol(
    refusals: Refusals, answers: Answers, limits: HeadLimits
) -> type[EdgeHttpProtocol]:
    """The protocol class for one server (uvicorn makes one instance per connection); it
    records and answers its refusals as the application does, with `refusals` and `answers`."""

    class ConfiguredEdgeHttpProtocol(EdgeHttpProtocol):
        pass

    ConfiguredEdgeHttpProtocol.refusals = refusals
    ConfiguredEdgeHttpProtocol.answers = answers
    ConfiguredEdgeHttpProtocol.limits = limits
    return ConfiguredEdgeHttpProtocol
