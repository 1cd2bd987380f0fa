"""The simulator's HTTP/1.1 client: one keep-alive connection, reopened, never fooled."""

from __future__ import annotations

import base64

import pytest

from simulator.connection import USER_AGENT, Connection, Target
from tests.unit.simulator.scripted_server import HANG_UP, Raw, ScriptedServer, in_turn

BODY = b'{"origin":"SMS_MO","code":"N211","tracking-id":"smsmo1"}'


async def post_all(
    server: ScriptedServer, count: int, url: str | None = None, timeout: float = 2.0
) -> tuple[list[int | None], Connection]:
    connection = Connection(Target.parse(url or server.url))
    try:
        results = [await connection.post(BODY, "application/json", timeout) for _ in range(count)]
    finally:
        await connection.close()
    return [result.status for result in results], connection


async def test_postbacks_share_one_keep_alive_connection() -> None:
    """Like the provider, the simulator sends one postback after another on one connection."""
    async with ScriptedServer() as server:
        statuses, connection = await post_all(server, 5)
    assert statuses == [200] * 5
    assert server.connections == connection.opened == 1


async def test_the_request_carries_path_body_content_type_and_credentials() -> None:
    """What the edge sees: the URL's path and query, the body as is, its type, Basic auth."""
    async with ScriptedServer() as server:
        url = f"http://127.0.0.1:{server.port}/postbacks/acme?account=7"
        connection = Connection(Target.parse(url, "provider", "s3cret:x"))
        result = await connection.post(BODY, "text/xml", 2.0)
        await connection.close()
    assert result.status == 200
    [request] = server.requests
    assert request.path == "/postbacks/acme?account=7"
    assert request.body == BODY
    assert request.headers["content-type"] == "text/xml"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["user-agent"] == USER_AGENT
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(b"provider:s3cret:x").decode()
    )


async def test_a_connection_the_server_closes_is_reopened() -> None:
    """`Connection: close` answers are honoured, and the next postback opens a new connection."""
    async with ScriptedServer(close_after_answer=True) as server:
        statuses, connection = await post_all(server, 3)
    assert statuses == [200] * 3
    assert server.connections == connection.opened == 3
    assert connection.resent == 0


async def test_a_stale_keep_alive_connection_is_replaced_within_the_attempt() -> None:
    """An idle connection the server dropped costs a resend on a fresh one, not a failure."""
    async with ScriptedServer(in_turn(200, HANG_UP)) as server:
        statuses, connection = await post_all(server, 2)
    assert statuses == [200, 200]
    assert connection.resent == 1
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_a_fresh_connection_closed_without_an_answer_is_a_failure() -> None:
    """Only a reused connection earns a resend; otherwise the attempt failed, once."""
    async with ScriptedServer(in_turn(then=HANG_UP)) as server:
        connection = Connection(Target.parse(server.url))
        result = await connection.post(BODY, "application/json", 2.0)
        await connection.close()
    assert (result.status, result.failure) == (None, "connection")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 202),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", 200),
    ],
)
async def test_answers_in_every_framing_are_read_and_the_connection_kept(
    answer: bytes, expected: int
) -> None:
    """Chunked, interim and body-less answers leave the connection ready for the next."""
    async with ScriptedServer(in_turn(Raw(answer))) as server:
        statuses, connection = await post_all(server, 2)
    assert statuses == [expected, 200]
    assert connection.opened == 1


async def test_an_answer_delimited_by_the_end_of_the_connection_is_read() -> None:
    """An answer without a length ends with its connection, and the next postback reconnects."""
    async with ScriptedServer(
        in_turn(Raw(b"HTTP/1.0 503 Busy\r\n\r\nlater", close=True))
    ) as server:
        statuses, connection = await post_all(server, 2)
    assert statuses == [503, 200]
    assert connection.opened == 2


async def test_garbage_instead_of_an_answer_is_a_protocol_failure() -> None:
    """Bytes that are not HTTP fail the attempt instead of being read as a status."""
    async with ScriptedServer(in_turn(Raw(b"SSH-2.0-OpenSSH\r\n"))) as server:
        connection = Connection(Target.parse(server.url))
        result = await connection.post(BODY, "application/json", 2.0)
        follow_up = await connection.post(BODY, "application/json", 2.0)
        await connection.close()
    assert (result.status, result.failure) == (None, "protocol")
    assert follow_up.status == 200
    assert connection.opened == 2  # the confused connection is not reused


def test_credentials_come_from_the_url_unless_given_and_never_show() -> None:
    """user:password@ in the URL works like --user/--password, and repr hides them."""
    target = Target.parse("https://provider:p%40ss@pb.example.com/postbacks")
    assert (target.secure, target.host, target.port) == (True, "pb.example.com", 443)
    assert target.authorization == "Basic " + base64.b64encode(b"provider:p@ss").decode()
    assert target.url == "https://pb.example.com/postbacks"
    assert "p@ss" not in repr(target)
    assert "cHJvdmlkZXI" not in repr(target)
    override = Target.parse("http://a:b@127.0.0.1:1/x", "other", "pw")
    assert override.authorization == "Basic " + base64.b64encode(b"other:pw").decode()


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/x", "127.0.0.1:8080/postbacks", "http:///x", "http://h:99999/"]
)
def test_urls_other_than_http_are_refused(url: str) -> None:
    """Only an http(s) URL with a host is ever contacted."""
    with pytest.raises(ValueError, match="--url"):
        Target.parse(url)
