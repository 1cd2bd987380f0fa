"""Assembles the edge from its parts; every live resource is passed in, none made at import."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest.answers import Answers
from ingest.deadlines import AnswerDeadlines
from ingest.guards import BasicAuth, PostbackGuard
from ingest.handlers import EdgeState, MetricsEndpoint, PostbackEndpoint, ReadinessEndpoint, healthz
from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.paths import is_postback_path, route_source
from ingest.publisher import Publisher
from ingest.refusals import Refusals
from ingest.settings import EdgeSettings

log = logging.getLogger("ingest")


class Edge:
    """The edge's ASGI application: the postback URLs, and Starlette for everything else.

    A postback passes the guard and reaches its endpoint in two calls. Starlette, with its
    error and exception middleware and its router (three awaited layers and a send wrapper
    each), serves the lifespan, the probes, /metrics and the 404s and 405s of other paths:
    together they cost a postback more than its guard, key and record did.
    """

    def __init__(
        self,
        *,
        guard: PostbackGuard,
        postbacks: PostbackEndpoint,
        refusals: Refusals,
        answers: Answers,
        others: ASGIApp,
    ) -> None:
        self._guard = guard
        self._postbacks = postbacks
        self._refusals = refusals
        self._answers = answers
        self._others = others

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_postback_path(path := scope["path"]):
            facts, refusal = self._guard.check(scope)
            if refusal is None:
                source = route_source(path)
                if source is None:
                    await self._others(scope, receive, send)  # 404, as for any unknown path
                    return
                if scope["method"] == "POST":
                    await self._postbacks(scope, receive, send, facts, source)
                    return
                refusal = Outcome.METHOD_NOT_ALLOWED
            detail = None
            if refusal is Outcome.BODY_TOO_LARGE:  # refused for the length it declared
                declared = facts.headers[b"content-length"].decode("latin-1")
                detail = "content-length " + declared[:20]
            self._refusals.record(
                refusal, scope, client=facts.client, request_id=facts.request_id, detail=detail
            )
            await self._answers.send(send, refusal)
            return
        await self._others(scope, receive, send)


def create_app(
    settings: EdgeSettings,
    publisher: Publisher,
    registry: CollectorRegistry,
    *,
    metrics: EdgeMetrics,
    refusals: Refusals,
    answers: Answers,
    state: EdgeState,
) -> Edge:
    """The edge's application. `metrics` (registered in `registry`), `refusals` and `answers`
    are shared with the HTTP layer, which refuses some requests before the application runs."""
    postbacks = PostbackEndpoint(
        publisher=publisher,
        refusals=refusals,
        answers=answers,
        metrics=metrics,
        state=state,
        deadlines=AnswerDeadlines(settings.answer_deadline_s),
        max_body_bytes=settings.max_body_bytes,
        sources=settings.sources,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        metrics.watch(
            lambda: publisher.kafka_up,
            publisher.outage_seconds,
            settings.provider_retry_horizon_s,
        )
        metrics.draining.set_function(lambda: 1.0 if state.draining else 0.0)
        state.started = True
        log.info(
            "edge ready",
            extra={"fields": {"topic": settings.topics.raw.name, "port": settings.port}},
        )
        if settings.exposed_to_anyone:  # EDGE_ALLOW_ANY_SENDER=true said it is meant
            log.warning("any address may post to this edge, without credentials")
        try:
            yield
        finally:
            state.draining = True
            await publisher.stop(within_s=flush_timeout(settings.drain_timeout_s))
            log.info("edge stopped")

    async def refused_route(request: Request, exc: Exception) -> Response:
        """404 and 405 from routing: counted and logged like every other refusal."""
        assert isinstance(exc, HTTPException)
        outcome = Outcome.METHOD_NOT_ALLOWED if exc.status_code == 405 else Outcome.NOT_FOUND
        refusals.record(outcome, request.scope)
        return Response(outcome.body, outcome.status, headers=exc.headers, media_type="text/plain")

    basic_auth = None
    if settings.basic_auth_user is not None and settings.basic_auth_password is not None:
        basic_auth = BasicAuth(settings.basic_auth_user, settings.basic_auth_password)

    others = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", ReadinessEndpoint(state, publisher).respond, methods=["GET"]),
            Route("/metrics", MetricsEndpoint(registry).respond, methods=["GET"]),
        ],
        exception_handlers={404: refused_route, 405: refused_route},
        lifespan=lifespan,
    )
    # `/healthz/` would otherwise get a 307 to a Location built from the Host header: not an
    # answer the edge documents, and a redirect a client could be talked into following.
    others.router.redirect_slashes = False
    return Edge(
        guard=PostbackGuard(
            allowed_networks=settings.allowed_networks,
            trusted_proxies=settings.trusted_proxies,
            basic_auth=basic_auth,
            max_body_bytes=settings.max_body_bytes,
        ),
        postbacks=postbacks,
        refusals=refusals,
        answers=answers,
        others=others,
    )


def flush_timeout(drain_timeout_s: float) -> float:
    """The share of the drain time kept for flushing the producer after requests finish."""
    return min(5.0, max(0.5, drain_timeout_s / 4))
