"""Runs the edge under uvicorn (uvloop + httptools) with a drain that loses nothing.

On SIGTERM: readiness turns false at once; after `shutdown_delay_s` (time for the load
balancer to notice; 0 when a preStop hook already waited) uvicorn stops accepting, lets
in-flight requests finish, then the lifespan flushes the producer. Every request answered 200
was acknowledged by Kafka before its answer, so cutting the drain short can only cost the
provider a retry, never a postback.
"""

from __future__ import annotations

import gc
import socket
import time
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry, disable_created_metrics

from common.logs import configure_logging
from ingest.answers import Answers
from ingest.app import create_app, flush_timeout
from ingest.handlers import EdgeState
from ingest.instruments import EdgeMetrics
from ingest.protocol import HeadLimits, edge_protocol
from ingest.publisher import KafkaPublisher
from ingest.refusals import Refusals
from ingest.settings import EdgeSettings

# A collection of the youngest generation scans every request in flight (its task, coroutines,
# futures: about 35 objects each; 0.5 ms at 64 connections), and the default threshold (700
# allocations) starts one every ~70 requests; full collections rescan all that start-up made.
# Measured at 64 connections: 11 us per request, 4-5% of the edge's CPU. With start-up's
# objects frozen and a threshold 14 times higher, a collection runs every ~1000 requests; the
# cyclic garbage that waits meanwhile is a few thousand small objects.
GC_THRESHOLDS = (10_000, 10, 10)


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        state: EdgeState,
        shutdown_delay_s: float,
        *,
        tune_gc: bool = False,
    ) -> None:
        super().__init__(config)
        self._state = state
        self._shutdown_delay_s = shutdown_delay_s
        self._exit_at: float | None = None
        self._tune_gc = tune_gc

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._tune_gc and self.started:
            # What start-up made (modules, the app, the Kafka client) lives as long as the
            # process: kept out of every later collection instead of rescanned by each.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)

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
    settings: EdgeSettings, registry: CollectorRegistry | None = None, *, tune_gc: bool = False
) -> DrainingServer:
    """The edge's server, ready to `run()` (a process) or `serve()` (inside a running loop).

    `tune_gc` (for a process of its own: the garbage collector is the process's) freezes what
    start-up made and collects less often.
    """
    # `_created` series double the output and nobody graphs them. Untyped in prometheus_client.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = registry or CollectorRegistry()
    state = EdgeState()
    metrics = EdgeMetrics(registry, sources=settings.sources)
    refusals = Refusals(metrics)
    answers = Answers(retry_after_s=settings.retry_after_s)
    publisher = KafkaPublisher(
        settings.kafka,
        settings.topics.raw,
        create_topic=settings.topics.create_missing,
        linger_ms=settings.linger_ms,
        probe_interval_s=settings.kafka_probe_interval_s,
    )
    app = create_app(
        settings,
        publisher,
        registry,
        metrics=metrics,
        refusals=refusals,
        answers=answers,
        state=state,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools with the head limits and the upgrade refusal uvicorn lacks (protocol.py).
        http=edge_protocol(
            refusals, answers, HeadLimits(settings.max_header_bytes, settings.header_timeout_s)
        ),
        # The edge serves no WebSockets: an upgrade request is refused like any other.
        ws="none",
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
        h11_max_incomplete_event_size=settings.max_header_bytes,  # should h11 ever be used
    )
    return DrainingServer(config, state, settings.shutdown_delay_s, tune_gc=tune_gc)


def run(settings: EdgeSettings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    build_server(settings, tune_gc=True).run()
