"""The postback endpoint and the operational ones (health, readiness, metrics).

The postback endpoint is a plain ASGI callable: the provider sends one postback at a time over
one connection, so whatever this code spends per request caps the provider's throughput.
It reads the body and waits for Kafka's acknowledgement within one answer deadline, and
answers; nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from common.ops_http import json_response, metrics_response
from ingest.answers import Answers
from ingest.deadlines import AnswerDeadlines
from ingest.guards import RequestFacts
from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.paths import INVALID_SOURCE, SOURCE_PATTERN
from ingest.publisher import Publisher, PublishError
from ingest.records import build_record
from ingest.refusals import Refusals


@dataclass(slots=True)
class EdgeState:
    """Lifecycle flags the probes report: started once Kafka is connected, then draining."""

    started: bool = False
    draining: bool = False


async def read_body(receive: Receive, limit: int) -> bytes | Outcome:
    """The whole body, or the outcome that stopped reading it (too large, client gone).

    Counting as chunks arrive catches chunked bodies that declared no length, so an oversized
    body is refused after `limit` bytes, never buffered whole.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return Outcome.CLIENT_DISCONNECTED
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return Outcome.BODY_TOO_LARGE
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


class PostbackEndpoint:
    """POST /postbacks[/{source}], for a request the guard let through.

    Counts every answer it gives (and records its refusals, ingest/refusals.py), and claims the
    source label (ingest/instruments.py) of every request that names an accepted source,
    whatever the answer.
    """

    def __init__(
        self,
        *,
        publisher: Publisher,
        refusals: Refusals,
        answers: Answers,
        metrics: EdgeMetrics,
        state: EdgeState,
        deadlines: AnswerDeadlines,
        max_body_bytes: int,
        sources: frozenset[str],
    ) -> None:
        self._publisher = publisher
        self._refusals = refusals
        self._answers = answers
        self._metrics = metrics
        self._state = state
        self._deadlines = deadlines
        self._max_body_bytes = max_body_bytes
        self._sources = sources
        # A plain int the in-flight gauge reads at scrape time: no lock on the request path.
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, facts: RequestFacts, source: str
    ) -> None:
        started = time.perf_counter()
        received_at_ms = time.time_ns() // 1_000_000
        self.in_flight += 1
        detail = None
        try:
            if not SOURCE_PATTERN.fullmatch(source) or (
                self._sources and source not in self._sources
            ):
                outcome = Outcome.NOT_FOUND
                source = INVALID_SOURCE
            elif not self._state.started:
                outcome = Outcome.NOT_READY
            else:
                outcome, detail = await self._accept(facts, source, receive, received_at_ms)
            await self._answers.send(send, outcome)
        finally:
            self.in_flight -= 1
        self._metrics.request_seconds.observe(time.perf_counter() - started)
        if outcome.refused:
            self._refusals.record(
                outcome,
                scope,
                source=source,
                claim=True,
                client=facts.client,
                request_id=facts.request_id,
                detail=detail,
            )
        else:
            self._metrics.answered(source, outcome, claim=True)

    async def _accept(
        self, facts: RequestFacts, source: str, receive: Receive, received_at_ms: int
    ) -> tuple[Outcome, str | None]:
        waiting_for = Outcome.BODY_TIMEOUT
        deadline = self._deadlines.start()
        try:
            # One deadline for the whole answer: reading the body and Kafka's acknowledgement
            # draw from the same budget.
            with deadline:
                body = await read_body(receive, self._max_body_bytes)
                if isinstance(body, Outcome):
                    return body, None
                self._metrics.body_bytes.observe(len(body))
                record = build_record(
                    body,
                    source=source,
                    received_at_ms=received_at_ms,
                    client_addr=facts.client,
                    request_id=facts.request_id,
                    content_type=facts.headers.get(b"content-type"),
                    user_agent=facts.headers.get(b"user-agent"),
                )
                waiting_for = Outcome.KAFKA_TIMEOUT
                produce_started = time.perf_counter()
                await self._publisher.publish(record)
        except TimeoutError:
            return waiting_for, f"deadline {self._deadlines.budget_s} s"
        except PublishError as error:
            return Outcome.KAFKA_ERROR, str(error)
        self._metrics.produce_seconds.observe(time.perf_counter() - produce_started)
        return Outcome.ACCEPTED, None


def healthz(request: Request) -> Response:
    """Alive: the process answers. Kafka trouble is readiness, not liveness: restarting the
    edge would not bring Kafka back, and a live edge keeps answering 503 so the provider
    retries."""
    return json_response(200, {"status": "alive"})


class ReadinessEndpoint:
    """GET /readyz: 200 while the edge should get postbacks (started, not draining, Kafka up)."""

    def __init__(self, state: EdgeState, publisher: Publisher) -> None:
        self._state = state
        self._publisher = publisher

    async def respond(self, request: Request) -> Response:
        kafka_up = self._publisher.kafka_up
        ready = self._state.started and not self._state.draining and kafka_up
        return json_response(
            200 if ready else 503,
            {
                "ready": ready,
                "started": self._state.started,
                "draining": self._state.draining,
                "kafka_up": kafka_up,
                "kafka_outage_seconds": round(self._publisher.outage_seconds(), 3),
            },
        )


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    async def respond(self, request: Request) -> Response:
        return metrics_response(self._registry)
