"""The edge's answers: what each outcome tells the client, the same whether the application
or the HTTP layer sends it."""

from __future__ import annotations

import httptools
import pytest
from starlette.types import Message

from ingest.answers import Answers
from ingest.outcomes import Outcome

ANSWERED = [outcome for outcome in Outcome if outcome is not Outcome.CLIENT_DISCONNECTED]


async def asgi_answer(answers: Answers, outcome: Outcome) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await answers.send(send, outcome)
    return sent


class Parsed:
    """An HTTP/1.1 answer as httptools reads it (the parser uvicorn itself uses)."""

    def __init__(self, data: bytes) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = False
        parser = httptools.HttpResponseParser(self)
        parser.feed_data(data)
        self.status = parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


async def test_answers_tell_the_client_what_to_do_next() -> None:
    """503 says when to retry, 405 which method, 401 which credentials; an answer after which
    the edge hangs up says so."""
    answers = Answers(retry_after_s=30)

    def headers(outcome: Outcome) -> dict[bytes, bytes]:
        return dict(Parsed(answers.wire(outcome)).headers)

    for outcome in (Outcome.KAFKA_TIMEOUT, Outcome.KAFKA_ERROR, Outcome.NOT_READY):
        assert headers(outcome)[b"retry-after"] == b"30", outcome
    assert headers(Outcome.METHOD_NOT_ALLOWED)[b"allow"] == b"POST"
    assert headers(Outcome.BAD_CREDENTIALS)[b"www-authenticate"].startswith(b"Basic ")
    assert b"retry-after" not in headers(Outcome.ACCEPTED)
    for outcome in ANSWERED:
        assert (headers(outcome).get(b"connection") == b"close") is outcome.closes, outcome


@pytest.mark.parametrize("outcome", ANSWERED, ids=lambda outcome: outcome.reason)
async def test_the_http_layer_sends_the_same_answer_as_the_application(outcome: Outcome) -> None:
    """A refusal written by the HTTP layer (ingest/protocol.py) is a complete HTTP/1.1 answer
    with the status, headers and text the application would send."""
    answers = Answers(retry_after_s=7)
    start, body = await asgi_answer(answers, outcome)
    parsed = Parsed(answers.wire(outcome))

    assert parsed.complete
    assert parsed.status == start["status"] == outcome.status
    assert parsed.headers == dict(start["headers"])
    assert parsed.body == body["body"] == outcome.body


async def test_a_client_that_left_gets_nothing() -> None:
    """Nobody listens to a client that disconnected: no answer is written."""
    assert await asgi_answer(Answers(retry_after_s=30), Outcome.CLIENT_DISCONNECTED) == []
