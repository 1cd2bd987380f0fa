"""Runs the edge under uvicorn (uvloop + httptools) with a drain that loses nothing.

On SIGTERM: readiness turns false at once; after `shutdown_delay_s` (time for the load
balancer to notice; 0 when a preStop hook already waited) uvicorn stops accepting, lets
in-flight requests finish, then the lifespan flushes the producer. Every request answered 200
was acknowledged by Kafka before its answer, so cutting the drain short can only cost the
provider a retry, never a postback.
"""

from __future__ import annotations

import time
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry, disable_created_metrics

from common.logs import configure_logging
from ingest.app import create_app, flush_timeout
from ingest.handlers import EdgeState
from ingest.publisher import KafkaPublisher
from ingest.settings import EdgeSettings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: EdgeState, shutdown_delay_s: float) -> None:
        super().__init__(config)
        self._state = state
        self._shutdown_delay_s = shutdown_delay_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._state.draining or self._shutdown_delay_s <= 0:
            self._state.draining = True
            super().handle_exit(sig, frame)
            return
        self._state.draining = True
        self._captured_signals.append(sig)
        self._exit_at = time.monotonic() + self._shutdown_delay_s

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def build_server(
    settings: EdgeSettings, registry: CollectorRegistry | None = None
) -> DrainingServer:
    """The edge's server, ready to `run()` (a process) or `serve()` (inside a running loop)."""
    # `_created` series double the output and nobody graphs them. Untyped in prometheus_client.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    state = EdgeState()
    publisher = KafkaPublisher(
        settings.kafka,
        settings.topics.raw,
        create_topic=settings.topics.create_missing,
        linger_ms=settings.linger_ms,
        probe_interval_s=settings.kafka_probe_interval_s,
    )
    app = create_app(settings, publisher, registry or CollectorRegistry(), state)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        # Our guard resolves X-Forwarded-For against EDGE_TRUSTED_PROXIES; uvicorn would
        # otherwise believe it from any loopback peer.
        proxy_headers=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=int(settings.keepalive_timeout_s),
        timeout_graceful_shutdown=max(
            1, int(settings.drain_timeout_s - flush_timeout(settings.drain_timeout_s))
        ),
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return DrainingServer(config, state, settings.shutdown_delay_s)


def run(settings: EdgeSettings) -> None:
    configure_logging(settings.log_level)
    build_server(settings).run()
