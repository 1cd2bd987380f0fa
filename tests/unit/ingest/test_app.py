"""The edge's application as a whole: which requests reach the postback endpoint, what every
other one is answered, and the lifespan around the sink."""

from __future__ import annotations

import base64
import logging

import pytest
from prometheus_client import CollectorRegistry

from ingest.answers import Answers
from ingest.app import Edge, create_app
from ingest.handlers import EdgeState
from ingest.instruments import EdgeMetrics
from ingest.refusals import Refusals
from ingest.settings import EdgeSettings
from tests.unit.ingest.asgi import ALLOWED_CLIENT, MemoryPublisher, call, lifespan

BODY = b'{"origin":"SMS_MT","code":"N202","tracking-id":"U01TXzkxMjM0NTY3"}'


def edge(publisher: MemoryPublisher, **environ: str) -> tuple[Edge, CollectorRegistry]:
    settings = EdgeSettings.from_environ({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", **environ})
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    app = create_app(
        settings,
        publisher,
        registry,
        metrics=metrics,
        refusals=Refusals(metrics),
        answers=Answers(retry_after_s=settings.retry_after_s),
        state=EdgeState(),
    )
    return app, registry


async def test_a_postback_is_stored_only_between_start_up_and_shutdown() -> None:
    """The lifespan starts the sink before the edge takes postbacks and stops it at the end."""
    publisher = MemoryPublisher()
    app, _ = edge(publisher)

    before = await call(app, "POST", "/postbacks/mt", body=[BODY])
    async with lifespan(app):
        assert publisher.started
        during = await call(app, "POST", "/postbacks/mt", body=[BODY])
    assert publisher.stopped

    assert (before.status, during.status) == (503, 200)
    assert [record.value for record in publisher.records] == [BODY]


@pytest.mark.parametrize(
    ("environ", "request_headers", "client", "status"),
    [
        ({"EDGE_ALLOWED_CIDRS": "203.0.113.0/24"}, [], ALLOWED_CLIENT, 403),
        ({"EDGE_ALLOWED_CIDRS": "203.0.113.0/24"}, [], None, 403),
        (
            {"EDGE_ALLOWED_CIDRS": "203.0.113.0/24", "EDGE_TRUSTED_PROXIES": "10.0.0.0/8"},
            [(b"x-forwarded-for", b"203.0.113.5")],
            "10.1.2.3",
            200,
        ),
        (
            {"EDGE_BASIC_AUTH_USER": "provider", "EDGE_BASIC_AUTH_PASSWORD": "pw"},
            [],
            ALLOWED_CLIENT,
            401,
        ),
        (
            {"EDGE_BASIC_AUTH_USER": "provider", "EDGE_BASIC_AUTH_PASSWORD": "pw"},
            [(b"authorization", b"Basic " + base64.b64encode(b"provider:pw"))],
            ALLOWED_CLIENT,
            200,
        ),
        ({"EDGE_MAX_BODY_BYTES": "10"}, [(b"content-length", b"11")], ALLOWED_CLIENT, 413),
    ],
    ids=[
        "outside the allowlist",
        "no peer address",
        "behind a trusted proxy",
        "no credentials",
        "right credentials",
        "declared too large",
    ],
)
async def test_the_guard_decides_before_the_body_is_read(
    environ: dict[str, str],
    request_headers: list[tuple[bytes, bytes]],
    client: str | None,
    status: int,
) -> None:
    """Allowlist, credentials and declared size are checked on the head: a refused request's
    body is never read, and only an admitted one is stored."""
    publisher = MemoryPublisher()
    app, _ = edge(publisher, **environ)

    async with lifespan(app):
        answer = await call(
            app, "POST", "/postbacks/mt", body=[BODY], headers=request_headers, client=client
        )

    assert answer.status == status
    assert len(publisher.records) == (status == 200)
    if status != 200:
        assert answer.received == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "source"),
    [
        ("GET", "/postbacks/mt", 405, "other"),  # a source only admitted requests claim
        ("POST", "/postbacks/", 404, "invalid"),
        ("POST", "/postbacks/mt/extra", 404, "invalid"),
        ("GET", "/healthz/", 404, "none"),
        ("POST", "/healthz", 405, "none"),
        ("GET", "/wp-login.php", 404, "none"),
    ],
)
async def test_other_methods_and_paths_are_refused_not_redirected(
    method: str, path: str, status: int, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only POST to a postback URL is a postback; anything else gets 404 or 405, never a
    redirect, and is recorded once like every refusal."""
    caplog.set_level(logging.DEBUG, logger="ingest")
    app, registry = edge(MemoryPublisher())

    async with lifespan(app):
        answer = await call(app, method, path)

    assert answer.status == status
    assert b"location" not in answer.headers
    if path.startswith("/postbacks/mt") and status == 405:
        assert answer.headers[b"allow"] == b"POST"
    (line,) = [r.fields for r in caplog.records if r.msg == "postback refused: %s"]  # type: ignore[attr-defined]
    assert (line["method"], line["path"], line["status"]) == (method, path, status)
    labels = {"source": source, "status": str(status)}
    assert registry.get_sample_value("postback_edge_requests_total", labels) == 1


async def test_probes_and_metrics_are_served_to_anyone() -> None:
    """/healthz, /readyz and /metrics are for the cluster: the postback allowlist does not
    apply to them."""
    app, _ = edge(MemoryPublisher(), EDGE_ALLOWED_CIDRS="203.0.113.0/24")

    async with lifespan(app):
        health = await call(app, "GET", "/healthz")
        ready = await call(app, "GET", "/readyz")
        metrics = await call(app, "GET", "/metrics")

    assert (health.status, ready.status, metrics.status) == (200, 200, 200)
    assert b"postback_edge_requests_total" in metrics.body
