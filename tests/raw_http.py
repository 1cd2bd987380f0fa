"""A raw HTTP/1.1 client for tests that send what no HTTP library would.

Requests are bytes, written in whatever pieces the test chooses; answers are parsed from
everything the server sent, so an answer written just before the server hung up (a 413, a
400) is still read even when the connection then ends with a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


class ProtocolError(AssertionError):
    """The server sent bytes that are not an HTTP/1.1 answer, or half of one."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased; a repeated name keeps its last value
    body: bytes
    interim: tuple[int, ...] = ()  # 1xx answers (100 Continue) that came first

    @property
    def closes(self) -> bool:
        """The server said it ends the connection after this answer."""
        return b"close" in self.headers.get(b"connection", b"").lower()


@dataclass
class _Parsed:
    answer: Answer | None = None
    consumed: int = 0
    interim: list[int] = field(default_factory=list)


class RawConnection(asyncio.Protocol):
    """One TCP connection: `send` bytes, `answer()` the next answer, `ended()` for EOF."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._received = bytearray()
        self._changed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = False
        self.reset = False

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received += data
        self._changed.set()

    def eof_received(self) -> bool:
        self._changed.set()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reset = exc is not None
        self._writable.set()
        self._changed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # the client
    async def send(self, *parts: bytes, gap_s: float = 0.0) -> bool:
        """Write each part and wait until the kernel took it (`gap_s` apart, for slow clients).

        Returns False when the server hung up before everything was written: servers may
        answer and close before a refused body is in.
        """
        for index, part in enumerate(parts):
            if index and gap_s:
                await asyncio.sleep(gap_s)  # the slowness is the input under test
            if self.lost or self._transport is None or self._transport.is_closing():
                return False
            self._transport.write(part)
            # Yield to the loop, so that a server in this same loop (the edge in tests) mostly
            # reads each part on its own rather than all of them at once.
            await asyncio.sleep(0)
            await self._writable.wait()
        return not self.lost

    def half_close(self) -> None:
        """Say "no more bytes from me", as a client that gave up mid-request does."""
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(OSError):
                self._transport.write_eof()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def answer(self, timeout: float, *, head: bool = False) -> Answer | None:
        """The next complete answer, or None when the connection ended without one.

        Raises TimeoutError when no whole answer came within `timeout` seconds and the
        connection is still open, and ProtocolError for bytes that are not an answer or for an
        answer cut short.
        """
        async with asyncio.timeout(timeout):
            while True:
                parsed = _parse_answer(bytes(self._received), head=head, eof=self.lost)
                if parsed.answer is not None:
                    del self._received[: parsed.consumed]
                    return parsed.answer
                if self.lost:
                    if self._received.strip():
                        raise ProtocolError(
                            f"connection ended mid-answer: {self._received[:200]!r}"
                        )
                    return None
                self._changed.clear()
                await self._changed.wait()

    async def ended(self, timeout: float) -> bool:
        """Whether the server ends the connection within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not self.lost:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True


def _parse_answer(data: bytes, *, head: bool, eof: bool) -> _Parsed:
    """One answer from the start of `data`, skipping 1xx ones; `answer` None if incomplete."""
    parsed = _Parsed()
    while True:
        end = data.find(b"\r\n\r\n", parsed.consumed)
        if end < 0:
            return _Parsed(interim=parsed.interim)
        lines = data[parsed.consumed : end].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if version != b"HTTP/1.1" or not code.isdigit():
            raise ProtocolError(f"not a status line: {lines[0][:200]!r}")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ProtocolError(f"not a header line: {line[:200]!r}")
            headers[name.strip().lower()] = value.strip()
        status = int(code)
        start = end + 4
        if 100 <= status < 200:
            parsed.interim.append(status)
            parsed.consumed = start
            continue
        body_end = _body_end(data, start, headers, head=head or status in (204, 304), eof=eof)
        if body_end is None:
            return _Parsed(interim=parsed.interim)
        body = _dechunk(data[start:body_end]) if _chunked(headers) else data[start:body_end]
        answer = Answer(status, headers, body, tuple(parsed.interim))
        return _Parsed(answer=answer, consumed=body_end)


def _chunked(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"transfer-encoding", b"").lower() == b"chunked"


def _body_end(
    data: bytes, start: int, headers: dict[bytes, bytes], *, head: bool, eof: bool
) -> int | None:
    if head:
        return start
    if _chunked(headers):
        position = start
        while True:
            line_end = data.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = _chunk_size(data[position:line_end])
            position = line_end + 2 + size + 2
            if position > len(data):
                return None
            if size == 0:
                return position
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        return start + length if len(data) >= start + length else None
    return len(data) if eof else None  # delimited by the end of the connection


def _chunk_size(line: bytes) -> int:
    try:
        return int(line.split(b";")[0], 16)
    except ValueError:
        raise ProtocolError(f"not a chunk-size line: {line[:200]!r}") from None


def _dechunk(raw: bytes) -> bytes:
    body = bytearray()
    position = 0
    while True:
        line_end = raw.index(b"\r\n", position)
        size = _chunk_size(raw[position:line_end])
        body += raw[line_end + 2 : line_end + 2 + size]
        position = line_end + 2 + size + 2
        if size == 0:
            return bytes(body)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """`body` in chunked transfer coding, cut into chunks of `sizes` (the rest in one)."""
    out = bytearray()
    position = 0
    for size in [*sizes, len(body)]:
        piece = body[position : position + size]
        if piece:
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
            position += len(piece)
    return bytes(out + b"0\r\n\r\n")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in pieces cut at `cuts` (positions, any order; out-of-range ones ignored)."""
    points = sorted({cut for cut in cuts if 0 < cut < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
