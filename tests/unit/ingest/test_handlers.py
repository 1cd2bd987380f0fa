"""The postback endpoint and /readyz: what a request the guard let through is answered, what
reaches the sink, and when the edge says it is ready."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from common import raw_record
from ingest.answers import Answers
from ingest.deadlines import AnswerDeadlines
from ingest.guards import RequestFacts
from ingest.handlers import EdgeState, PostbackEndpoint, ReadinessEndpoint, read_body
from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.publisher import PublishError
from ingest.refusals import Refusals
from tests.unit.ingest.asgi import ALLOWED_CLIENT, MemoryPublisher, call, http_scope

BODY = b'{"origin":"SMS_MT","code":"N202","tracking-id":"U01TXzkxMjM0NTY3"}'


class Endpoint:
    """A PostbackEndpoint as the app runs it for one source, with its own registry."""

    def __init__(
        self,
        publisher: MemoryPublisher,
        *,
        source: str = "mt",
        started: bool = True,
        sources: frozenset[str] = frozenset(),
        budget_s: float = 5.0,
    ) -> None:
        self.registry = CollectorRegistry()
        metrics = EdgeMetrics(self.registry)
        self.source = source
        self.endpoint = PostbackEndpoint(
            publisher=publisher,
            refusals=Refusals(metrics),
            answers=Answers(retry_after_s=30),
            metrics=metrics,
            state=EdgeState(started=started),
            deadlines=AnswerDeadlines(budget_s),
            max_body_bytes=1024,
            sources=sources,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts = RequestFacts(
            client=ALLOWED_CLIENT, request_id="req-7", headers=dict(scope["headers"])
        )
        await self.endpoint(scope, receive, send, facts, self.source)

    def answered(self, source: str, status: int) -> float:
        labels = {"source": source, "status": str(status)}
        return self.registry.get_sample_value("postback_edge_requests_total", labels) or 0.0


async def test_an_accepted_postback_is_in_the_sink_before_its_200() -> None:
    """200 only once the sink has the body untouched, keyed by its tracking id, with the
    request's facts as headers."""
    publisher = MemoryPublisher()
    endpoint = Endpoint(publisher)
    before_ms = time.time_ns() // 1_000_000

    answer = await call(
        endpoint,
        "POST",
        "/postbacks/mt",
        body=[BODY[:10], BODY[10:]],
        headers=[(b"content-type", b"application/json")],
    )

    assert (answer.status, answer.body) == (200, b"accepted\n")
    (record,) = publisher.records
    assert (record.value, record.key) == (BODY, b"U01TXzkxMjM0NTY3")
    headers = dict(record.headers)
    assert headers[raw_record.SOURCE] == b"mt"
    assert headers[raw_record.REQUEST_ID] == b"req-7"
    assert headers[raw_record.CLIENT_ADDR] == ALLOWED_CLIENT.encode()
    assert headers[raw_record.CONTENT_TYPE] == b"application/json"
    assert before_ms <= record.timestamp_ms <= time.time_ns() // 1_000_000
    assert endpoint.answered("mt", 200) == 1
    assert endpoint.endpoint.in_flight == 0


@pytest.mark.parametrize(
    ("make", "status", "reason"),
    [
        (lambda: Endpoint(MemoryPublisher(), started=False), 503, "not_ready"),
        (lambda: Endpoint(MemoryPublisher(), sources=frozenset({"mo"})), 404, "not_found"),
        (lambda: Endpoint(MemoryPublisher(), source="Not A Label"), 404, "not_found"),
        (
            lambda: Endpoint(MemoryPublisher(outcome=PublishError("NotEnoughReplicas: 1 < 2"))),
            503,
            "kafka_error",
        ),
        (lambda: Endpoint(MemoryPublisher(outcome="never"), budget_s=0.05), 503, "kafka_timeout"),
    ],
    ids=["not started", "source not allowed", "invalid source", "Kafka error", "Kafka timeout"],
)
async def test_a_postback_that_is_not_stored_is_refused_so_the_provider_retries_or_is_told(
    make: Callable[[], Endpoint], status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No 200 without the sink's acknowledgement; the refusal is counted and logged once."""
    caplog.set_level(logging.DEBUG, logger="ingest")
    endpoint = make()

    answer = await call(endpoint, "POST", f"/postbacks/{endpoint.source}", body=[BODY])

    assert answer.status == status
    assert (b"retry-after" in answer.headers) is (status == 503)
    (line,) = [record.fields for record in caplog.records]  # type: ignore[attr-defined]
    assert (line["reason"], line["request_id"]) == (reason, "req-7")
    assert endpoint.endpoint.in_flight == 0


async def test_an_invalid_source_counts_as_invalid_not_as_a_label_of_its_own() -> None:
    """A source outside EDGE_SOURCES (or not a label) never becomes a metric label."""
    endpoint = Endpoint(MemoryPublisher(), source="scanner", sources=frozenset({"mt"}))

    await call(endpoint, "POST", "/postbacks/scanner", body=[BODY])

    assert endpoint.answered("invalid", 404) == 1
    assert endpoint.answered("scanner", 404) == 0


async def test_a_stalled_body_gets_408_at_the_deadline_and_nothing_is_stored() -> None:
    """A body that stops arriving is answered 408 within the answer deadline."""
    publisher = MemoryPublisher()
    endpoint = Endpoint(publisher, budget_s=0.05)

    answer = await call(endpoint, "POST", "/postbacks/mt", body=[BODY[:10]], stall=True)

    assert (answer.status, answer.headers[b"connection"]) == (408, b"close")
    assert publisher.records == []


async def test_an_oversized_body_is_refused_after_the_limit_without_reading_the_rest() -> None:
    """A chunked body without a declared length is counted as it arrives: 413 as soon as it
    passes the limit, and the rest is never read."""
    publisher = MemoryPublisher()
    endpoint = Endpoint(publisher)

    answer = await call(endpoint, "POST", "/postbacks/mt", body=[b"x" * 600] * 4)

    assert (answer.status, answer.headers[b"connection"]) == (413, b"close")
    assert answer.received == 2
    assert publisher.records == []


async def test_read_body_reports_a_client_that_left() -> None:
    """A disconnect mid-body is an outcome of its own (nobody to answer), not an empty body."""
    messages: list[Message] = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    assert await read_body(receive, 1024) is Outcome.CLIENT_DISCONNECTED


@pytest.mark.parametrize(
    ("started", "draining", "kafka_up", "ready"),
    [
        (False, False, True, False),
        (True, False, True, True),
        (True, False, False, False),
        (True, True, True, False),
    ],
)
async def test_ready_only_when_started_not_draining_and_kafka_up(
    started: bool, draining: bool, kafka_up: bool, ready: bool
) -> None:
    """The load balancer sends postbacks only to an edge that can store them."""
    readiness = ReadinessEndpoint(
        EdgeState(started=started, draining=draining), MemoryPublisher(up=kafka_up)
    )

    response = await readiness.respond(Request(http_scope("GET", "/readyz")))

    assert response.status_code == (200 if ready else 503)
    assert b'"kafka_up":%s' % (b"true" if kafka_up else b"false") in response.body
