"""HTTP fuzzing of the edge: whatever bytes arrive, the answer is one the README lists, the edge
keeps serving, what it answered 200 is in Kafka byte for byte, and memory stays bounded.

The documented answers (README, "The edge") are the outcome table of `ingest/outcomes.py` (its
499 is a log reason, never sent; its 408, 431 and 400 for stalled or oversized heads and upgrade
requests come from the edge's HTTP layer, `ingest/protocol.py`) and the 400 the HTTP server
itself sends for bytes that are not HTTP/1.1. Hypothesis runs in a worker thread and hands
each request to the test's event loop, where the real edge serves it against the session's
real broker; what needs the whole run (Kafka's contents, memory, logged errors) is checked
after it.

The bugs this fuzzing found (redirects on a trailing slash, 408 answers that kept the
connection, bodies of upgrade requests lost, unbounded and untimed request heads) each have a
test at the end that states the behaviour the edge has had since.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.raw_record import header_text
from ingest.keys import partition_key
from ingest.outcomes import Outcome
from testkit.kafka_tools import read_all_committed
from testkit.samples import all_malformed, all_valid
from tests.integration.ingest.conftest import EdgeFactory, RunningEdge
from tests.raw_http import Answer, RawConnection, chunked, split_at

pytestmark = pytest.mark.kafka

T = TypeVar("T")

LIMIT = 4096  # EDGE_MAX_BODY_BYTES: small, so that 413 is cheap to reach
DEADLINE_S = 1.0  # EDGE_ANSWER_DEADLINE_SECONDS: short, so that 408 is cheap to reach
HEADER_TIMEOUT_S = 1.0  # EDGE_HEADER_TIMEOUT_SECONDS: likewise for heads
MAX_HEADER_BYTES = 64 * 1024  # EDGE_MAX_HEADER_BYTES, its default
# Every answer is due within the deadline; the rest is slack for a loaded 2-core machine.
ANSWER_WAIT_S = DEADLINE_S + 4.0

EDGE_STATUSES = frozenset(
    outcome.status for outcome in Outcome if outcome is not Outcome.CLIENT_DISCONNECTED
)
SERVER_STATUSES = frozenset({400})  # uvicorn + httptools: "Invalid HTTP request received."
DOCUMENTED = EDGE_STATUSES | SERVER_STATUSES
# Answers after which the edge hangs up: what follows a refused head, an unread or stalled body,
# or an upgrade is never read as a request.
CLOSING = frozenset(outcome.status for outcome in Outcome if outcome.closes) | SERVER_STATUSES

# The edge keeps, per connection, one request head and at most one body (LIMIT bytes), and
# nothing once a request is answered. A campaign sends a few hundred requests with heads up to
# 48 KiB and bodies up to 1 MiB (tens of MiB in all): an edge that kept what it read, or leaked
# connections or tasks (each holding 64 KiB+ of buffers), would outgrow this bound. The margin
# is for what legitimately grows in the same process: Hypothesis's record of its examples, the
# test's client, aiokafka's buffers, allocator fragmentation. Measured here: 5-10 MiB per
# campaign (20 MiB at 800 examples), while 3000 such requests sent without Hypothesis leave the
# RSS flat.
MEMORY_GROWTH_BOUND = 50 * 1024 * 1024

# Examples are cheap but not free (one or two requests against a real edge and broker each):
# these counts keep the whole file within ~40 s on a loaded 2-core machine.
CAMPAIGN = settings(
    max_examples=150,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
async def fuzz_edge(start_edge: EdgeFactory) -> AsyncIterator[RunningEdge]:
    async with start_edge(
        EDGE_ANSWER_DEADLINE_SECONDS=DEADLINE_S,
        EDGE_MAX_BODY_BYTES=LIMIT,
        EDGE_HEADER_TIMEOUT_SECONDS=HEADER_TIMEOUT_S,
    ) as edge:
        yield edge


def rss_bytes() -> int:
    """This process's resident memory; the edge runs in the test's event loop, so it is the
    edge's too."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def post_head(
    path: bytes, request_id: str, length: int, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: edge", b"X-Request-Id: " + request_id.encode()]
    lines += [name + b": " + value for name, value in extra]
    lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


# --- a campaign: Hypothesis in a thread, requests on the edge's loop ----------------------------


@dataclass
class Campaign:
    """What one fuzzing run sent and was told, for the checks that need the whole run."""

    edge: RunningEdge
    loop: asyncio.AbstractEventLoop
    # request id -> the body it carried, for every request answered "accepted"; None when its
    # framing was too broken to say which bytes are the body (then only "stored once" holds).
    accepted: dict[str, bytes | None] = field(default_factory=dict)
    # request id -> Kafka headers its record must carry, where the test knows them.
    record_headers: dict[str, dict[str, bytes]] = field(default_factory=dict)
    sent_ids: set[str] = field(default_factory=set)
    statuses: collections.Counter[int | None] = field(default_factory=collections.Counter)
    probes_on_kept_connections: int = 0
    keep_alive: RawConnection | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def request_id(self, kind: str) -> str:
        request_id = f"{kind}-{next(self._ids):06d}"
        self.sent_ids.add(request_id)
        return request_id

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the edge's event loop, from Hypothesis's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def probe(self, connection: RawConnection | None = None) -> None:
        """A normal postback still gets 200 (on `connection` when it may carry another)."""
        request_id = self.request_id("probe")
        body = b'{"origin":"SMS_MT","tracking-id":"%s"}' % request_id.encode()
        fresh = connection is None or connection.lost
        if fresh:
            connection = await RawConnection.open(self.edge.port)
        else:
            self.probes_on_kept_connections += 1
        assert connection is not None
        try:
            await connection.send(post_head(b"/postbacks/probe", request_id, len(body)) + body)
            answer = await connection.answer(ANSWER_WAIT_S)
        finally:
            if fresh:
                connection.close()
        assert answer is not None, "the edge stopped answering"
        assert answer.status == 200, answer
        self.accepted[request_id] = body


async def run_campaign(edge: RunningEdge, examples: Callable[[Campaign], None]) -> Campaign:
    campaign = Campaign(edge, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(examples, campaign)
    finally:
        if campaign.keep_alive is not None:
            campaign.keep_alive.close()
    return campaign


async def check_kafka(campaign: Campaign, bootstrap: str) -> None:
    """Every postback answered 200 is in the raw topic once, byte for byte; nothing else is."""
    records = await read_all_committed(bootstrap, campaign.edge.settings.topics.raw.name)
    stored: dict[str, list[bytes]] = collections.defaultdict(list)
    for record in records:
        headers = dict(record.headers)
        request_id = headers["request-id"].decode()
        stored[request_id].append(record.value)
        content_type = header_text(headers.get("content-type"))
        assert record.key == partition_key(record.value, content_type), request_id
        for name, value in campaign.record_headers.get(request_id, {}).items():
            assert headers.get(name) == value, (request_id, name)
    assert stored.keys() <= campaign.sent_ids, "records that no request of this run sent"
    for request_id, body in campaign.accepted.items():
        assert request_id in stored, f"{request_id} was answered 200 but is not in Kafka"
        assert len(stored[request_id]) == 1, f"{request_id} is stored more than once"
        if body is not None:
            assert stored[request_id] == [body], request_id


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What anyone logged as an error: an exception in the app, a failed protocol callback."""
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]


# --- any request -------------------------------------------------------------------------------


def _no_line_breaks(data: bytes) -> bytes:
    return data.replace(b"\r", b"").replace(b"\n", b"")


TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Each part of a request comes from a valid strategy (the parser takes it; the app may refuse
# it) and an odd one (most parsers refuse it). A request is valid but for a few odd parts, so
# that the campaign explores the app's answers as well as the parser's.
valid_methods = st.sampled_from([b"POST"] * 6 + b"GET PUT DELETE HEAD OPTIONS PATCH".split())
odd_methods = st.one_of(
    st.sampled_from([*b"CONNECT TRACE PRI post \xc3\x9cPOST".split(), b"P OST", b""]),
    st.text(TOKEN, min_size=1, max_size=10).map(str.encode),
    st.binary(max_size=8).map(_no_line_breaks),
)
valid_targets = st.one_of(
    st.sampled_from(b"/postbacks /postbacks/mt /postbacks/mt /postbacks/default".split()),
    st.from_regex(rb"/postbacks/[a-z0-9_-]{1,64}", fullmatch=True),
    st.sampled_from(
        b"""/postbacks/MT /postbacks/mt/extra /healthz /readyz /metrics / * //postbacks
        /postbacks/%6dt /postbacks/%ff /postbacks/%00 /postbacks/..%2fhealthz /postbacks?a=1
        http://edge/postbacks/mt /postbacks/mt#f""".split()
    ),
    st.just(b"/postbacks/" + b"a" * 65),
    st.text(max_size=24).map(lambda text: b"/postbacks/" + urllib.parse.quote(text).encode()),
)
odd_targets = st.one_of(
    st.sampled_from([*b"/postbacks/\xc3\xa9 /postbacks/\xff /postbacks?\xff x".split(), b""]),
    st.binary(max_size=24).map(lambda tail: b"/postbacks/" + _no_line_breaks(tail)),
    st.binary(max_size=40).map(_no_line_breaks),
)
valid_versions = st.sampled_from(b"HTTP/1.1 HTTP/1.1 HTTP/1.0".split())
odd_versions = st.sampled_from([*b"HTTP/2.0 HTTP/1.2 HTTP/0.9 http/1.1".split(), b"HTTP/1.1 x"])
valid_line_ends = st.just(b"\r\n")
odd_line_ends = st.sampled_from([b"\n", b"\r", b"\r\r\n"])
# Header names the framing and the bookkeeping of a fuzzed request own.
RESERVED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"x-request-id"})
token_names = st.one_of(
    st.sampled_from(
        b"""Host Content-Type User-Agent Authorization X-Forwarded-For Connection Expect
        Accept-Encoding Cookie Trailer TE Upgrade""".split()
    ),
    st.text(TOKEN, min_size=1, max_size=16).map(str.encode),
).filter(lambda name: name.lower() not in RESERVED_HEADERS)
field_values = st.one_of(
    st.sampled_from(
        [
            *b"close keep-alive 100-continue application/json \xff\xfe\xfd \xed\xa0\x80".split(),
            *[b"text/xml; charset=x", b"Basic !!!", b"203.0.113.5, 10.0.0.1", b""],
            *[b"Upgrade", b"Upgrade, HTTP2-Settings", b"h2c", b"websocket"],
        ]
    ),
    # Visible bytes, spaces and tabs, obs-text (0x80-0xff): what a field value may hold.
    st.binary(max_size=40).map(
        lambda value: bytes(byte for byte in value if byte in b"\t" or 0x20 <= byte != 0x7F)
    ),
)
valid_headers = st.lists(st.tuples(token_names, field_values), max_size=6)
odd_headers = st.lists(
    st.tuples(
        st.binary(min_size=1, max_size=12)
        .map(_no_line_breaks)
        .filter(lambda name: bool(name) and name.strip().lower() not in RESERVED_HEADERS),
        st.binary(max_size=40).map(_no_line_breaks),
    ),
    min_size=1,
    max_size=4,
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=LIMIT + 256),
    st.integers(LIMIT - 2, LIMIT + 2).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
# How a body is framed. The valid framings are ones a parser must take; only "length" and
# "chunked" (and "none" without a body) are what a correct client sends.
VALID_FRAMINGS = (
    "length",
    "chunked",
    "none",  # no body
    "short-length",  # declares less than it sends: the rest reads as the next request
    "huge-length",  # declares far over the limit, sends a little
    "huge-chunked",  # sends far over the limit, declaring nothing
)
ODD_FRAMINGS = (
    "bad-length",  # a Content-Length no parser should take
    "length-and-chunked",  # both: the classic request-smuggling ambiguity
    "bad-chunked",  # a chunk-size line that is not hex
)
BAD_LENGTHS = [b"-1", b"abc", b"1 2", b"0x10", b"+3", b"99999999999999999999999", b"", b"\xd9\xa3"]
FRAMING_DETAILS: dict[str, st.SearchStrategy[int | bytes]] = {
    "chunked": st.integers(1, 2048),
    "short-length": st.integers(1, 64),
    "bad-length": st.sampled_from(BAD_LENGTHS),
    "huge-length": st.integers(LIMIT + 1, 10**12),
    "huge-chunked": st.integers(LIMIT + 1, 1024 * 1024),
}
PARTS = ("method", "target", "version", "line_end", "headers", "framing")
NOW_AND_THEN = st.sampled_from([False] * 5 + [True])  # uniform, unlike integers' edge bias


@dataclass(frozen=True)
class FuzzRequest:
    method: bytes = b"POST"
    target: bytes = b"/postbacks/mt"
    version: bytes = b"HTTP/1.1"
    line_end: bytes = b"\r\n"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    framing: str = "length"
    body: bytes = b"{}"
    # By framing: chunk size (chunked), shortfall (short-length), declared or sent length
    # (huge-length, huge-chunked), the bad value (bad-length).
    detail: int | bytes = 0
    cuts: tuple[int, ...] = ()  # where the bytes are split into separate writes
    truncate_at: int | None = None  # send only this many bytes, then half-close

    def render(self, request_id: str) -> bytes:
        lines = [b" ".join(part for part in (self.method, self.target, self.version) if part)]
        lines.append(b"X-Request-Id: " + request_id.encode())
        lines += [name + b": " + value for name, value in self.headers]
        framing, body, detail = self.framing, self.body, self.detail
        if framing == "length":
            lines.append(b"Content-Length: %d" % len(body))
        elif framing == "chunked":
            assert isinstance(detail, int)
            lines.append(b"Transfer-Encoding: chunked")
            body = chunked(body, [detail] * (len(body) // detail + 1))
        elif framing == "none":
            body = b""
        elif framing == "short-length":
            lines.append(b"Content-Length: %d" % self.declared_short)
        elif framing == "bad-length":
            assert isinstance(detail, bytes)
            lines.append(b"Content-Length: " + detail)
        elif framing == "length-and-chunked":
            lines += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
            body = chunked(body, [])
        elif framing == "bad-chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        elif framing == "huge-length":
            lines.append(b"Content-Length: %d" % int(detail))
        elif framing == "huge-chunked":
            lines.append(b"Transfer-Encoding: chunked")
            size = int(detail)
            body = chunked(b"x" * size, [16 * 1024] * (size // (16 * 1024) + 1))
        eol = self.line_end
        data = eol.join(lines) + eol + eol + body
        return data if self.truncate_at is None else data[: self.truncate_at]

    @property
    def declared_short(self) -> int:
        return max(0, len(self.body) - int(self.detail))

    @property
    def stored_body(self) -> bytes | None:
        """The bytes the edge must store if it accepts this request, where they are defined."""
        if self.framing in ("length", "chunked"):
            return self.body
        if self.framing == "none":
            return b""
        if self.framing == "short-length":
            return self.body[: self.declared_short]
        return None

    @property
    def keeps_framing(self) -> bool:
        """Whether the request ends exactly where HTTP/1.1 says, so another may follow it on
        the same connection. CONNECT turns a connection into a tunnel, which the edge lacks."""
        return (
            self.truncate_at is None
            and self.framing in ("length", "chunked", "none", "huge-chunked")
            and self.method != b"CONNECT"
        )


@st.composite
def fuzz_requests(draw: st.DrawFn) -> FuzzRequest:
    how_many_odd = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
    odd = draw(st.sets(st.sampled_from(PARTS), min_size=how_many_odd, max_size=how_many_odd))

    def part(name: str, valid: st.SearchStrategy[T], odd_one: st.SearchStrategy[T]) -> T:
        return draw(odd_one if name in odd else valid)

    framing = part("framing", st.sampled_from(VALID_FRAMINGS), st.sampled_from(ODD_FRAMINGS))
    headers = part("headers", valid_headers, odd_headers)
    if draw(NOW_AND_THEN):  # a head as large as a proxy may forward, or larger than allowed
        headers.append((b"X-Pad", b"p" * draw(st.integers(1024, MAX_HEADER_BYTES + 16 * 1024))))
    request = FuzzRequest(
        method=part("method", valid_methods, odd_methods),
        target=part("target", valid_targets, odd_targets),
        version=part("version", valid_versions, odd_versions),
        line_end=part("line_end", valid_line_ends, odd_line_ends),
        headers=tuple(headers),
        framing=framing,
        body=draw(bodies),
        detail=draw(FRAMING_DETAILS.get(framing, st.just(0))),
        cuts=tuple(draw(st.lists(st.integers(1, 2 * LIMIT), max_size=4))),
    )
    if draw(NOW_AND_THEN):  # a client that gives up halfway through
        length = len(request.render("fuzz-000000"))
        request = dataclasses.replace(request, truncate_at=draw(st.integers(0, length - 1)))
    return request


async def exchange_fuzzed(campaign: Campaign, request: FuzzRequest) -> None:
    request_id = campaign.request_id("fuzz")
    connection = await RawConnection.open(campaign.edge.port)
    try:
        await connection.send(*split_at(request.render(request_id), list(request.cuts)))
        if request.truncate_at is not None:
            connection.half_close()
        answer = await connection.answer(ANSWER_WAIT_S, head=request.method == b"HEAD")
        campaign.statuses[answer.status if answer else None] += 1
        if answer is None:
            assert request.truncate_at is not None, "a complete request got no answer"
            return  # only a client that hung up first may go unanswered
        assert answer.status in DOCUMENTED, answer
        assert set(answer.interim) <= {100}, answer
        if answer.status in CLOSING:
            # What follows the refused head or body is never read as a request: the edge
            # hangs up.
            assert answer.closes, answer
            assert await connection.ended(ANSWER_WAIT_S), f"still open after {answer.status}"
        if answer.body == Outcome.ACCEPTED.body:
            campaign.accepted[request_id] = request.stored_body
        # The edge keeps serving; a connection it keeps open carries the next request intact.
        reusable = request.keeps_framing and not answer.closes
        await campaign.probe(connection if reusable else None)
    finally:
        connection.close()


@given(request=fuzz_requests())
@example(request=FuzzRequest(method=b"FOO"))
@example(request=FuzzRequest(target=b"/postbacks/\xff"))
@example(request=FuzzRequest(headers=((b"X A", b"b"),)))
@example(request=FuzzRequest(framing="length-and-chunked"))
@example(request=FuzzRequest(framing="huge-length", detail=50 * 1024 * 1024))
@example(request=FuzzRequest(framing="huge-chunked", detail=1024 * 1024))
@example(request=FuzzRequest(method=b"PUT", framing="huge-chunked", detail=1024 * 1024))
@example(request=FuzzRequest(target=b"/postbacks/MT", body=b"x" * 100))
@example(request=FuzzRequest(headers=((b"Expect", b"100-continue"),)))
@example(request=FuzzRequest(body=b"\xff\xfe\x00garbage\x80", truncate_at=60))
@example(request=FuzzRequest(headers=((b"Connection", b"Upgrade"), (b"Upgrade", b"h2c"))))
@example(request=FuzzRequest(method=b"CONNECT", target=b"edge:443"))
@example(request=FuzzRequest(target=b"/postbacks/mt/"))
@example(request=FuzzRequest(headers=((b"X-Pad", b"p" * (MAX_HEADER_BYTES + 1024)),)))
@CAMPAIGN
def fuzz_any_request(campaign: Campaign, request: FuzzRequest) -> None:
    campaign.run(exchange_fuzzed(campaign, request))


async def test_any_request_gets_a_documented_answer_and_the_edge_keeps_serving(
    fuzz_edge: RunningEdge, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a client sends (odd methods, paths, headers and framing, invalid UTF-8,
    requests cut short), the answer is one the README lists, the next postback still gets 200,
    what the edge accepted is stored as sent, nothing crashes, and memory stays bounded."""
    rss_before = rss_bytes()
    campaign = await run_campaign(fuzz_edge, fuzz_any_request)
    growth = rss_bytes() - rss_before

    # The explicit examples make sure the campaign reached each kind of answer.
    assert {200, 400, 404, 405, 413, 431, None} <= campaign.statuses.keys(), campaign.statuses
    assert campaign.probes_on_kept_connections
    await check_kafka(campaign, kafka_bootstrap)
    assert not logged_errors(caplog)
    assert fuzz_edge.server.started
    assert not fuzz_edge.server.should_exit
    assert growth < MEMORY_GROWTH_BOUND, f"RSS grew {growth / 2**20:.1f} MiB"


# --- well-formed postbacks ---------------------------------------------------------------------

# Bodies a provider, or a broken one, may send: the samples, binary, UTF-8 and UTF-16 text,
# invalid UTF-8 sequences, and sizes on either side of the limit.
postback_bodies = st.one_of(
    st.sampled_from([body for _, body in all_valid() + all_malformed()]),
    st.binary(max_size=LIMIT),
    st.text(max_size=LIMIT // 4).map(lambda text: text.encode("utf-8")),
    st.text(max_size=LIMIT // 4).map(lambda text: text.encode("utf-16")),
    st.lists(
        st.sampled_from(
            [
                *b"\xff \xc3 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \x00".split(),
                *[b'{"tracking-id":"', b'"}', b"<TRACKINGID>", b"</TRACKINGID>", b"abc"],
            ]
        )
    ).map(b"".join),
    st.integers(LIMIT - 3, LIMIT + 3).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.integers(LIMIT + 1, 256 * 1024).map(lambda n: b"y" * n),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from([b"application/json", b"text/xml", b"application/x-www-form-urlencoded"]),
    # Any visible bytes, obs-text (0x80-0xff) included; HTTP trims the spaces around a value.
    st.binary(min_size=1, max_size=30)
    .filter(lambda value: all(byte >= 0x21 and byte != 0x7F for byte in value))
    .map(bytes),
)


@dataclass(frozen=True)
class Postback:
    body: bytes
    source: str | None = None  # /postbacks/{source}, or /postbacks
    content_type: bytes | None = None
    chunk_size: int | None = None  # chunked transfer coding, else Content-Length
    cuts: tuple[int, ...] = ()

    def render(self, request_id: str) -> bytes:
        path = b"/postbacks" + (b"/" + self.source.encode() if self.source else b"")
        lines = [
            b"POST " + path + b" HTTP/1.1",
            b"Host: edge",
            b"X-Request-Id: " + request_id.encode(),
        ]
        if self.content_type is not None:
            lines.append(b"Content-Type: " + self.content_type)
        body = self.body
        if self.chunk_size is None:
            lines.append(b"Content-Length: %d" % len(body))
        else:
            lines.append(b"Transfer-Encoding: chunked")
            body = chunked(body, [self.chunk_size] * (len(body) // self.chunk_size + 1))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def post_over_keep_alive(campaign: Campaign, postback: Postback) -> None:
    """As the provider does: one postback at a time over one keep-alive connection."""
    if campaign.keep_alive is None or campaign.keep_alive.lost:
        campaign.keep_alive = await RawConnection.open(campaign.edge.port)
    connection = campaign.keep_alive
    request_id = campaign.request_id("post")
    await connection.send(*split_at(postback.render(request_id), list(postback.cuts)))
    answer = await connection.answer(ANSWER_WAIT_S)
    campaign.statuses[answer.status if answer else None] += 1
    assert answer is not None, "no answer"
    if len(postback.body) > LIMIT:
        assert answer.status == 413, answer
        assert answer.closes, answer
        connection.close()
        campaign.keep_alive = None
        return
    assert answer.status == 200, answer
    assert answer.body == Outcome.ACCEPTED.body, answer
    campaign.accepted[request_id] = postback.body
    expected = {"source": (postback.source or "default").encode()}
    if postback.content_type is not None:
        expected["content-type"] = postback.content_type
    campaign.record_headers[request_id] = expected


@given(
    postback=st.builds(
        Postback,
        body=postback_bodies,
        source=st.one_of(st.none(), st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True)),
        content_type=content_types,
        chunk_size=st.one_of(st.none(), st.integers(1, 2 * LIMIT)),
        cuts=st.lists(st.integers(1, 2 * LIMIT), max_size=4).map(tuple),
    )
)
@example(postback=Postback(b"\xff\xfe\x00garbage\x80", "mt"))
@example(postback=Postback(b"", "mt", chunk_size=1))
@example(postback=Postback(b"z" * LIMIT, content_type=b"application/json", cuts=(20, 300)))
@example(postback=Postback(b"z" * LIMIT, chunk_size=1000))
@example(postback=Postback(b"z" * (LIMIT + 1), "mt"))
@example(postback=Postback(b"z" * (LIMIT + 1), "mt", chunk_size=1000))
@CAMPAIGN
def fuzz_postbacks(campaign: Campaign, postback: Postback) -> None:
    campaign.run(post_over_keep_alive(campaign, postback))


async def test_every_postback_within_the_limit_is_stored_byte_for_byte(
    fuzz_edge: RunningEdge, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Any body up to the limit (binary, invalid UTF-8, any size, framing or split into TCP
    segments), sent as the provider does over one keep-alive connection, gets 200 and is in
    Kafka exactly once, byte for byte; a body over the limit gets 413 and is not stored."""
    rss_before = rss_bytes()
    campaign = await run_campaign(fuzz_edge, fuzz_postbacks)
    growth = rss_bytes() - rss_before

    assert {200, 413} == campaign.statuses.keys(), campaign.statuses
    await check_kafka(campaign, kafka_bootstrap)
    assert len(campaign.accepted) == campaign.statuses[200]
    assert not logged_errors(caplog)
    assert growth < MEMORY_GROWTH_BOUND, f"RSS grew {growth / 2**20:.1f} MiB"


# --- slow clients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stall:
    body: bytes
    chunk_size: int | None  # chunked transfer coding, else Content-Length
    sent: int  # how many bytes of the framed body arrive before the client stalls
    pieces: int  # in how many writes they arrive


@st.composite
def stalls(draw: st.DrawFn) -> Stall:
    body = draw(st.binary(min_size=1, max_size=LIMIT))
    chunk_size = draw(st.one_of(st.none(), st.integers(1, LIMIT)))
    framed = Postback(body, chunk_size=chunk_size).render("stall-000000")
    body_length = len(framed) - framed.index(b"\r\n\r\n") - 4
    return Stall(body, chunk_size, draw(st.integers(0, body_length - 1)), draw(st.integers(1, 3)))


async def stall_once(campaign: Campaign, stall: Stall) -> None:
    request_id = campaign.request_id("stall")
    data = Postback(stall.body, chunk_size=stall.chunk_size).render(request_id)
    head_end = data.index(b"\r\n\r\n") + 4
    sent = data[head_end : head_end + stall.sent]
    connection = await RawConnection.open(campaign.edge.port)
    try:
        started = time.monotonic()
        cuts = [len(sent) * piece // stall.pieces for piece in range(1, stall.pieces)]
        await connection.send(data[:head_end], *split_at(sent, cuts))
        answer = await connection.answer(ANSWER_WAIT_S)
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    campaign.statuses[answer.status if answer else None] += 1
    assert answer is not None, "no answer"
    assert answer.status == 408, answer
    # The whole budget, and not much more: the provider gives up after 10 s.
    assert DEADLINE_S - 0.05 <= elapsed < DEADLINE_S + 1.5, elapsed
    await campaign.probe()


@given(stall=stalls())
@example(stall=Stall(b"x" * 100, None, 4, 1))
@settings(CAMPAIGN, max_examples=3)
def fuzz_stalls(campaign: Campaign, stall: Stall) -> None:
    campaign.run(stall_once(campaign, stall))


async def test_a_stalled_body_gets_408_at_the_deadline(
    fuzz_edge: RunningEdge, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops sending anywhere in its body (declared or chunked) gets 408 once
    the answer deadline has passed, nothing of it is stored, and the edge serves on."""
    campaign = await run_campaign(fuzz_edge, fuzz_stalls)

    assert campaign.statuses.keys() == {408}
    await check_kafka(campaign, kafka_bootstrap)
    assert not any(request_id.startswith("stall") for request_id in campaign.accepted)
    assert fuzz_edge.metric("postback_edge_refusals_total", reason="body_timeout") == sum(
        campaign.statuses.values()
    )
    assert not logged_errors(caplog)


async def test_a_slow_body_is_taken_until_the_deadline_and_cut_off_at_it(
    fuzz_edge: RunningEdge, kafka_bootstrap: str
) -> None:
    """A body trickling in is accepted if it is all in within the deadline; one still
    trickling when the deadline passes gets 408, however steadily it was arriving."""
    body = b'{"origin":"SMS_MT","tracking-id":"trickle"}'
    pieces = [body[index : index + 4] for index in range(0, len(body), 4)]  # 11 pieces

    async def trickle(request_id: str, gap_s: float) -> tuple[Answer | None, float]:
        connection = await RawConnection.open(fuzz_edge.port)
        started = time.monotonic()
        await connection.send(post_head(b"/postbacks/mt", request_id, len(body)))
        sending = asyncio.create_task(connection.send(*pieces, gap_s=gap_s))
        try:
            return await connection.answer(ANSWER_WAIT_S), time.monotonic() - started
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            connection.close()

    within, _ = await trickle("trickle-within", gap_s=DEADLINE_S / 40)  # all in at ~1/4
    assert within is not None, "no answer"
    assert within.status == 200, within
    beyond, elapsed = await trickle("trickle-beyond", gap_s=DEADLINE_S / 5)  # would take 2x
    assert beyond is not None, "no answer"
    assert beyond.status == 408, beyond
    assert elapsed < DEADLINE_S + 1.5, elapsed

    records = await read_all_committed(kafka_bootstrap, fuzz_edge.settings.topics.raw.name)
    assert [(dict(record.headers)["request-id"], record.value) for record in records] == [
        (b"trickle-within", body)
    ]


# --- what the bugs this fuzzing found taught: each test states the behaviour the edge has --------


async def exchange(edge: RunningEdge, data: bytes) -> Answer | None:
    connection = await RawConnection.open(edge.port)
    try:
        await connection.send(data)
        return await connection.answer(ANSWER_WAIT_S)
    finally:
        connection.close()


def refusals(edge: RunningEdge, reason: str) -> float:
    return edge.metric("postback_edge_refusals_total", reason=reason)


def postback(request_id: str, path: bytes = b"/postbacks/mt") -> tuple[bytes, bytes]:
    """A valid postback's bytes, and the body Kafka must hold once it is answered 200."""
    body = b'{"origin":"SMS_MT","tracking-id":"%s"}' % request_id.encode()
    return post_head(path, request_id, len(body)) + body, body


async def stored(edge: RunningEdge, bootstrap: str) -> list[tuple[bytes, bytes]]:
    records = await read_all_committed(bootstrap, edge.settings.topics.raw.name)
    return [(dict(record.headers)["request-id"], record.value) for record in records]


async def test_a_trailing_slash_is_refused_not_redirected(fuzz_edge: RunningEdge) -> None:
    """`/postbacks/mt/` is not a postback URL: it gets 404 like every other unknown path, not
    a redirect that a provider could follow to a Location built from its own Host header."""
    targets = (b"/postbacks/", b"/postbacks/mt/", b"/postbacks/mt%2f", b"/healthz/")
    for target in targets:
        answer = await exchange(fuzz_edge, post_head(target, "slash-000000", 2) + b"{}")
        assert answer is not None, target
        assert answer.status == 404, (target, answer)
        assert b"location" not in answer.headers, (target, answer)
    assert refusals(fuzz_edge, "not_found") == len(targets)


async def test_a_timed_out_request_closes_its_connection(fuzz_edge: RunningEdge) -> None:
    """After a 408 the edge hangs up (RFC 9110 15.5.9), so whatever the client sends next can
    never be taken for the rest of the stalled body, or a request smuggled inside it."""
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        await connection.send(post_head(b"/postbacks/mt", "stalled-000000", 100) + b"0123")
        answer = await connection.answer(ANSWER_WAIT_S)
        assert answer is not None, "no answer"
        assert answer.status == 408, answer
        assert answer.closes, answer.headers
        assert await connection.ended(ANSWER_WAIT_S)
    finally:
        connection.close()
    assert refusals(fuzz_edge, "body_timeout") == 1


UPGRADE = ((b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"))


@pytest.mark.parametrize("body_later", [True, False], ids=["body-in-a-later-segment", "at-once"])
async def test_a_postback_asking_for_an_upgrade_is_refused_and_nothing_after_it_is_read(
    fuzz_edge: RunningEdge, kafka_bootstrap: str, body_later: bool
) -> None:
    """A postback whose headers ask for a protocol upgrade (curl --http2 sends `Upgrade: h2c`
    on plain HTTP) gets 400 `upgrade_refused` and a closed connection: its body is never
    stored as empty, and never read as a request either, whether it comes with the head or
    after the answer."""
    smuggled, _ = postback("smuggled-000000")
    head = post_head(b"/postbacks/mt", "upgrade-000000", len(smuggled), UPGRADE)
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        if body_later:
            await connection.send(head)
            answer = await connection.answer(ANSWER_WAIT_S)
            await connection.send(smuggled)
        else:
            await connection.send(head + smuggled)
            answer = await connection.answer(ANSWER_WAIT_S)
        assert await connection.ended(ANSWER_WAIT_S), "still open after refusing an upgrade"
        assert await connection.answer(ANSWER_WAIT_S) is None, "a second answer"
    finally:
        connection.close()
    assert answer is not None, "no answer"
    assert (answer.status, answer.body) == (400, Outcome.UPGRADE_REFUSED.body), answer
    assert answer.closes, answer.headers
    assert refusals(fuzz_edge, "upgrade_refused") == 1
    # A WebSocket handshake on any path meets the same refusal (the edge has no WebSockets).
    websocket = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: Upgrade\r\n"
    websocket += b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    websocket += b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    answer = await exchange(fuzz_edge, websocket)
    assert answer is not None, "no answer"
    assert answer.status == 400, answer
    assert refusals(fuzz_edge, "upgrade_refused") == 2

    data, body = postback("after-000000")
    answer = await exchange(fuzz_edge, data)
    assert answer is not None, "no answer"
    assert answer.status == 200, answer
    assert await stored(fuzz_edge, kafka_bootstrap) == [(b"after-000000", body)]


@pytest.mark.parametrize("line_ends", [True, False], ids=["many-lines", "one-endless-line"])
async def test_an_endless_head_is_refused_before_it_fills_memory(
    fuzz_edge: RunningEdge, line_ends: bool
) -> None:
    """A client that keeps sending header bytes, in many lines or one, gets 431 and is cut
    off once EDGE_MAX_HEADER_BYTES are in, long before 8 MiB of them are buffered: memory per
    connection is bounded by the head and body limits."""
    piece = b"X-Pad: " + b"p" * 1000 + b"\r\n" if line_ends else b"p" * 1024
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        await connection.send(b"POST /postbacks/mt HTTP/1.1\r\nHost: edge\r\nX-Long: ")
        all_sent = await connection.send(*[piece * 64] * 128)  # 8 MiB in 64 KiB writes
        await connection.send(b"\r\nContent-Length: 2\r\n\r\n{}")
        answer = await connection.answer(ANSWER_WAIT_S)
    finally:
        connection.close()
    assert not all_sent, "the edge read 8 MiB of head"
    assert answer is not None, "no answer"
    assert (answer.status, answer.body) == (431, Outcome.HEADER_TOO_LARGE.body), answer
    assert answer.closes, answer.headers
    assert refusals(fuzz_edge, "header_too_large") == 1


@pytest.mark.parametrize(
    "head",
    [
        [b"POST /postbacks/mt HTTP/1.1\r\nHost: edge\r\n"],  # stops mid-head
        [],  # connects and sends nothing
        [b"POST /postbacks/mt HTTP/1.1\r\n"] + [b"X: y\r\n"] * 50,  # a header line per 0.1 s
    ],
    ids=["stalled", "silent", "trickling"],
)
async def test_a_client_slow_with_its_head_is_cut_off(
    fuzz_edge: RunningEdge, head: list[bytes]
) -> None:
    """A client whose request head is not complete EDGE_HEADER_TIMEOUT_SECONDS after it
    connected gets 408 and a closed connection, however steadily it trickles, rather than
    holding one of EDGE_MAX_CONNECTIONS for ever."""
    connection = await RawConnection.open(fuzz_edge.port)
    started = time.monotonic()
    sending = asyncio.create_task(connection.send(*head, gap_s=0.1))
    try:
        answer = await connection.answer(ANSWER_WAIT_S)
        elapsed = time.monotonic() - started
        assert await connection.ended(ANSWER_WAIT_S)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        connection.close()
    assert answer is not None, "no answer"
    assert (answer.status, answer.body) == (408, Outcome.HEADER_TIMEOUT.body), answer
    assert answer.closes, answer.headers
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed < HEADER_TIMEOUT_S + 1.5, elapsed
    assert refusals(fuzz_edge, "header_timeout") == 1


async def test_an_idle_keep_alive_connection_outlives_the_header_timeout(
    fuzz_edge: RunningEdge,
) -> None:
    """The header timeout runs from a request's first byte: the provider's keep-alive
    connection may idle between postbacks for as long as EDGE_KEEPALIVE_TIMEOUT_SECONDS."""
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        for n in range(2):
            await connection.send(postback(f"idle-{n:06d}")[0])
            answer = await connection.answer(ANSWER_WAIT_S)
            assert answer is not None, n
            assert answer.status == 200, answer
            assert not await connection.ended(HEADER_TIMEOUT_S * 2), "closed while idle"
    finally:
        connection.close()
    assert refusals(fuzz_edge, "header_timeout") == 0


async def test_the_unread_rest_of_an_answered_request_is_bounded_too(
    fuzz_edge: RunningEdge,
) -> None:
    """A request answered without reading its body (405 here) keeps its connection if the
    rest of the body follows in time, and loses it once the rest is EDGE_HEADER_TIMEOUT_SECONDS
    late: a refused client cannot hold the connection by trickling a huge body."""
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        await connection.send(post_head(b"/healthz", "rest-000000", 10) + b"01234")
        answer = await connection.answer(ANSWER_WAIT_S)
        assert answer is not None, "no answer"
        assert answer.status == 405, answer
        assert not answer.closes, answer.headers
        await connection.send(b"56789")  # the rest, in time: the connection carries on
        await connection.send(postback("rest-000001")[0])
        answer = await connection.answer(ANSWER_WAIT_S)
        assert answer is not None, "no answer"
        assert answer.status == 200, answer

        await connection.send(post_head(b"/healthz", "rest-000002", 10**9) + b"0123")
        answer = await connection.answer(ANSWER_WAIT_S)
        assert answer is not None, "no answer"
        assert answer.status == 405, answer
        started = time.monotonic()
        await connection.send(*[b"x"] * 100, gap_s=0.05)  # trickling on: still cut off
        assert await connection.ended(ANSWER_WAIT_S)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 1.5
    finally:
        connection.close()


async def test_a_refused_head_waits_for_the_answers_before_it(
    fuzz_edge: RunningEdge, kafka_bootstrap: str
) -> None:
    """Requests pipelined on one connection are answered in order: a head refused at the
    HTTP layer (431 here) is answered after the postback before it, which is stored."""
    data, body = postback("pipelined-000000")
    oversized = b"POST /postbacks/mt HTTP/1.1\r\nX-Pad: " + b"p" * (MAX_HEADER_BYTES * 3)
    connection = await RawConnection.open(fuzz_edge.port)
    try:
        await connection.send(data + oversized)
        first = await connection.answer(ANSWER_WAIT_S)
        second = await connection.answer(ANSWER_WAIT_S)
    finally:
        connection.close()
    assert first is not None, "no answer"
    assert first.status == 200, first
    assert second is not None, "no second answer"
    assert second.status == 431, second
    assert await stored(fuzz_edge, kafka_bootstrap) == [(b"pipelined-000000", body)]


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    start_edge: EdgeFactory,
) -> None:
    """Between requests a connection may idle for EDGE_KEEPALIVE_TIMEOUT_SECONDS (checked
    every EDGE_HEADER_TIMEOUT_SECONDS), then the edge closes it without an answer."""
    async with start_edge(
        EDGE_KEEPALIVE_TIMEOUT_SECONDS=1, EDGE_HEADER_TIMEOUT_SECONDS=0.5
    ) as edge:
        connection = await RawConnection.open(edge.port)
        try:
            await connection.send(postback("keepalive-000000")[0])
            answer = await connection.answer(ANSWER_WAIT_S)
            assert answer is not None, "no answer"
            assert answer.status == 200, answer
            idle_from = time.monotonic()
            assert await connection.ended(ANSWER_WAIT_S), "still open"
            idle_s = time.monotonic() - idle_from
            assert await connection.answer(ANSWER_WAIT_S) is None
        finally:
            connection.close()
    assert 0.95 <= idle_s < 1 + 0.5 + 1.0, idle_s
    assert refusals(edge, "header_timeout") == 0
