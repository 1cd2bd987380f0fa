"""Assembles the edge from its parts; every live resource is passed in, none made at import."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.answers import Answers
from ingest.guards import BasicAuth, PostbackGuard
from ingest.handlers import EdgeState, MetricsEndpoint, PostbackEndpoint, Readiness, healthz
from ingest.instruments import EdgeMetrics
from ingest.outcomes import Outcome
from ingest.paths import POSTBACK_PREFIX, is_postback_path, source_label
from ingest.publisher import Publisher
from ingest.settings import EdgeSettings

log = logging.getLogger("ingest")


def create_app(
    settings: EdgeSettings,
    publisher: Publisher,
    registry: CollectorRegistry,
    state: EdgeState | None = None,
) -> Starlette:
    state = state or EdgeState()
    metrics = EdgeMetrics(registry)
    answers = Answers(metrics, retry_after_s=settings.retry_after_s)
    postbacks = PostbackEndpoint(
        publisher=publisher,
        answers=answers,
        metrics=metrics,
        state=state,
        answer_deadline_s=settings.answer_deadline_s,
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
        path = request.url.path
        answers.record(
            outcome,
            source_label(path) if is_postback_path(path) else "none",
            method=request.method,
            path=path[:200],
        )
        return Response(outcome.body, outcome.status, headers=exc.headers, media_type="text/plain")

    basic_auth = None
    if settings.basic_auth_user is not None and settings.basic_auth_password is not None:
        basic_auth = BasicAuth(settings.basic_auth_user, settings.basic_auth_password)

    return Starlette(
        routes=[
            Route(POSTBACK_PREFIX, postbacks, methods=["POST"]),
            Route(POSTBACK_PREFIX + "/{source}", postbacks, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", Readiness(state, publisher).respond, methods=["GET"]),
            Route("/metrics", MetricsEndpoint(registry).respond, methods=["GET"]),
        ],
        middleware=[
            Middleware(
                PostbackGuard,
                answers=answers,
                allowed_networks=settings.allowed_networks,
                trusted_proxies=settings.trusted_proxies,
                basic_auth=basic_auth,
                max_body_bytes=settings.max_body_bytes,
            )
        ],
        exception_handlers={404: refused_route, 405: refused_route},
        lifespan=lifespan,
    )


def flush_timeout(drain_timeout_s: float) -> float:
    """The share of the drain time kept for flushing the producer after requests finish."""
    return min(5.0, max(0.5, drain_timeout_s / 4))
