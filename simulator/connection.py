"""One HTTP/1.1 keep-alive connection to the postback URL, as the provider keeps one open.

Raw asyncio streams and one request in flight at a time: the simulator waits for each answer
before it sends the next postback, as the provider does (postback-formats.md §6.4). A
connection the server closes (`Connection: close`, a body read to EOF, an idle keep-alive
timeout) is reopened for the next request. Nothing else is spoken: no redirects are followed,
no other host is contacted, no pipelining.

The attempt's budget covers connecting, sending and the whole answer, because the provider
drops the connection when either connecting or the response takes longer than 10 s.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit

USER_AGENT: Final = "postback-simulator/1"
_LINE_LIMIT: Final = 16 * 1024  # a status or header line longer than this is not an answer
_MAX_HEADERS: Final = 100
_MAX_BODY: Final = 1024 * 1024  # answers are read and thrown away; a huge one is a fault
_MAX_CHUNKS: Final = 10_000
_MAX_INTERIM: Final = 5  # 1xx answers skipped before the real one
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"

Failure = Literal["timeout", "connection", "protocol"]


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x answer we can read."""


class _Unanswered(ConnectionError):
    """The connection ended before the first byte of an answer."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where postbacks go: one URL, and the Basic credentials to present (never in `repr`)."""

    url: str  # for display: no credentials
    secure: bool
    host: str
    port: int
    path: str  # path and query, percent-encoded
    host_header: str
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, user: str | None = None, password: str | None = None) -> Target:
        """Validate an http(s) URL; `user`/`password` override credentials in the URL itself.

        Raises ValueError with a message meant for the command line.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url: expected http://host[:port]/path, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"--url: invalid port in {url!r}") from None
        if parts.fragment:
            raise ValueError("--url: a fragment (#...) is never sent; remove it")
        if user is None and parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
        authorization = None
        if user is not None:
            if ":" in user:
                raise ValueError("--user: Basic credentials cannot have ':' in the user name")
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            authorization = f"Basic {token}"
        netloc = parts.netloc.rpartition("@")[2]
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
        display = f"{parts.scheme}://{netloc}{path}"
        return cls(
            display, parts.scheme == "https", parts.hostname, port, path, netloc, authorization
        )


@dataclass(frozen=True, slots=True)
class Exchange:
    """One attempt: the answer's status, or the failure that stood in for one.

    `seconds` runs from the start of the attempt (connecting, when needed) to the last byte of
    the answer, or to the failure.
    """

    status: int | None
    failure: Failure | None
    seconds: float
    detail: str = ""


class Connection:
    """A keep-alive connection that reopens itself; `post` never raises for network trouble.

    A request that meets a connection the server had already closed while idle (no byte of an
    answer came back) is sent once more on a fresh connection within the same attempt, as any
    keep-alive client does; `resent` counts those. Every other failure is the attempt's result.
    """

    def __init__(self, target: Target, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.opened = 0
        self.resent = 0
        if target.secure and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self._ssl = ssl_context if target.secure else None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes, content_type: str, answer_timeout: float) -> Exchange:
        request = self._request(body, content_type)
        started = time.monotonic()
        failure: Failure
        try:
            async with asyncio.timeout(answer_timeout):
                status = await self._exchange(request)
        except TimeoutError:  # before OSError: TimeoutError is one
            failure, detail = "timeout", f"no answer within {answer_timeout:g} s"
        except (ProtocolError, ValueError) as error:
            failure, detail = "protocol", str(error) or type(error).__name__
        except (OSError, EOFError) as error:
            failure, detail = "connection", str(error) or type(error).__name__
        except asyncio.CancelledError:
            self._discard()
            raise
        else:
            return Exchange(status, None, time.monotonic() - started)
        self._discard()  # whatever the server sends later must not be read as the next answer
        return Exchange(None, failure, time.monotonic() - started, detail[:200])

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                pass  # closing is best effort; the socket is released either way

    def _request(self, body: bytes, content_type: str) -> bytes:
        target = self.target
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            f"User-Agent: {USER_AGENT}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        if target.authorization is not None:
            head += f"Authorization: {target.authorization}\r\n"
        return head.encode("latin-1") + b"\r\n" + body

    async def _exchange(self, request: bytes) -> int:
        reused = self._streams is not None
        try:
            return await self._send(request)
        except _Unanswered:
            if not reused:
                raise
        self.resent += 1
        self._discard()
        return await self._send(request)

    async def _send(self, request: bytes) -> int:
        if self._streams is None:
            self._streams = await asyncio.open_connection(
                self.target.host,
                self.target.port,
                ssl=self._ssl,
                server_hostname=self.target.host if self._ssl is not None else None,
                limit=_LINE_LIMIT,
            )
            self.opened += 1
        reader, writer = self._streams
        try:
            writer.write(request)
            await writer.drain()
            first = await reader.readline()
        except (ConnectionResetError, BrokenPipeError) as error:
            raise _Unanswered(f"connection lost before an answer: {error}") from error
        if not first:
            raise _Unanswered("the server closed the connection without answering")
        status, keep_open = await _read_answer(reader, first)
        if not keep_open:
            self._discard()
        return status

    def _discard(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _read_answer(reader: asyncio.StreamReader, first: bytes) -> tuple[int, bool]:
    """(status, whether the connection stays open) of the final answer; 1xx ones are skipped."""
    line = first
    for _ in range(_MAX_INTERIM + 1):
        version, status = _status_line(line)
        headers = await _headers(reader)
        if 100 <= status < 200:
            line = await reader.readline()
            if not line:
                raise ProtocolError("connection closed after an interim answer")
            continue
        tokens = {token.strip() for token in headers.get(b"connection", b"").lower().split(b",")}
        keep_open = b"keep-alive" in tokens if version == b"HTTP/1.0" else b"close" not in tokens
        if status in (204, 304):
            return status, keep_open
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await _read_chunked(reader)
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if not 0 <= length <= _MAX_BODY:
                raise ProtocolError(f"answer body of {length} bytes")
            await reader.readexactly(length)
        else:  # delimited by the end of the connection
            await _read_to_eof(reader)
            keep_open = False
        return status, keep_open
    raise ProtocolError(f"more than {_MAX_INTERIM} interim (1xx) answers")


def _status_line(line: bytes) -> tuple[bytes, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    status = int(parts[1])
    if not 100 <= status <= 999:
        raise ProtocolError(f"status {status} out of range")
    return parts[0], status


async def _headers(reader: asyncio.StreamReader) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ProtocolError("connection closed inside the answer's headers")
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        key = name.strip().lower()
        headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
    raise ProtocolError(f"more than {_MAX_HEADERS} header lines")


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    total = 0
    for _ in range(_MAX_CHUNKS):
        size = int((await reader.readline()).split(b";")[0].strip(), 16)  # ValueError: protocol
        if size == 0:
            await _headers(reader)  # trailers, up to the blank line
            return
        total += size
        if total > _MAX_BODY:
            raise ProtocolError(f"chunked answer body over {_MAX_BODY} bytes")
        await reader.readexactly(size + 2)
    raise ProtocolError(f"more than {_MAX_CHUNKS} chunks")


async def _read_to_eof(reader: asyncio.StreamReader) -> None:
    total = 0
    while chunk := await reader.read(64 * 1024):
        total += len(chunk)
        if total > _MAX_BODY:
            raise ProtocolError(f"answer body over {_MAX_BODY} bytes")
