"""The edge's settings: one frozen object, built once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.env import Env, IPNetwork, Secret, SettingsError
from common.kafka import KafkaSettings
from common.logs import FORMATS as LOG_FORMATS
from common.topics import TopicSettings
from ingest.paths import SOURCE_PATTERN


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    kafka: KafkaSettings
    topics: TopicSettings
    host: str = "127.0.0.1"
    port: int = 8080
    # The provider gives up on an answer after 10 s; answering 503 well before that lets it
    # retry instead of counting a timeout, and leaves room for the network on both sides.
    answer_deadline_s: float = 5.0
    max_body_bytes: int = 256 * 1024
    # Request line and header fields together. httptools itself buffers heads of any size; the
    # provider's are under 1 KiB, and proxies in front add a few hundred bytes.
    max_header_bytes: int = 64 * 1024
    # From a connection's start, or a request's first byte, to the end of its header fields;
    # also how long the unread rest of an already answered request may take. The provider
    # writes a whole request at once, so this only ever cuts off clients that stall on purpose
    # or broke: each one holds one of `max_connections` until then.
    header_timeout_s: float = 5.0
    allowed_networks: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    basic_auth_user: str | None = None
    basic_auth_password: Secret | None = None
    # Empty: any source label matching SOURCE_PATTERN is accepted.
    sources: frozenset[str] = frozenset()
    # The provider keeps one connection open for hours; this must outlast the idle timeout of
    # every load balancer in front (AWS ALB 60 s, GCP 600 s by default).
    keepalive_timeout_s: float = 650.0
    drain_timeout_s: float = 20.0
    shutdown_delay_s: float = 0.0
    max_connections: int = 1000
    retry_after_s: int = 30
    # The provider retries a refused postback about every 5 minutes, 5 times, then drops it:
    # a postback refused when an outage starts is gone once the outage outlasts this.
    provider_retry_horizon_s: float = 1500.0
    kafka_probe_interval_s: float = 5.0
    linger_ms: int = 0
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EdgeSettings:
        env = Env(environ)
        sources = frozenset(env.items("EDGE_SOURCES"))
        for source in sources:
            if not SOURCE_PATTERN.fullmatch(source):
                raise SettingsError(f"EDGE_SOURCES: {source!r} does not match [a-z0-9_-]{{1,64}}")
        user = env.optional_text("EDGE_BASIC_AUTH_USER")
        password = env.secret("EDGE_BASIC_AUTH_PASSWORD")
        if (user is None) != (password is None):
            raise SettingsError(
                "EDGE_BASIC_AUTH_USER and EDGE_BASIC_AUTH_PASSWORD: set both, or neither"
            )
        deadline = env.number("EDGE_ANSWER_DEADLINE_SECONDS", 5.0, minimum=0.05)
        if deadline >= 10:
            raise SettingsError(
                "EDGE_ANSWER_DEADLINE_SECONDS: must stay below the provider's 10 s timeout"
            )
        header_timeout = env.number("EDGE_HEADER_TIMEOUT_SECONDS", 5.0, minimum=0.05)
        if header_timeout >= 10:
            raise SettingsError(
                "EDGE_HEADER_TIMEOUT_SECONDS: must stay below the provider's 10 s timeout"
            )
        return cls(
            kafka=KafkaSettings.from_environ(environ),
            topics=TopicSettings.from_environ(environ),
            host=env.text("EDGE_HOST", "127.0.0.1"),
            port=env.integer("EDGE_PORT", 8080, minimum=0),
            answer_deadline_s=deadline,
            max_body_bytes=env.integer("EDGE_MAX_BODY_BYTES", 256 * 1024, minimum=1),
            max_header_bytes=env.integer("EDGE_MAX_HEADER_BYTES", 64 * 1024, minimum=1024),
            header_timeout_s=header_timeout,
            allowed_networks=env.networks("EDGE_ALLOWED_CIDRS", ("0.0.0.0/0", "::/0")),
            trusted_proxies=env.networks("EDGE_TRUSTED_PROXIES", ()),
            basic_auth_user=user,
            basic_auth_password=password,
            sources=sources,
            keepalive_timeout_s=env.number("EDGE_KEEPALIVE_TIMEOUT_SECONDS", 650.0, minimum=1),
            drain_timeout_s=env.number("EDGE_DRAIN_TIMEOUT_SECONDS", 20.0, minimum=0),
            shutdown_delay_s=env.number("EDGE_SHUTDOWN_DELAY_SECONDS", 0.0, minimum=0),
            max_connections=env.integer("EDGE_MAX_CONNECTIONS", 1000, minimum=1),
            retry_after_s=env.integer("EDGE_RETRY_AFTER_SECONDS", 30, minimum=0),
            provider_retry_horizon_s=env.number(
                "EDGE_PROVIDER_RETRY_HORIZON_SECONDS", 1500.0, minimum=1
            ),
            kafka_probe_interval_s=env.number("EDGE_KAFKA_PROBE_SECONDS", 5.0, minimum=0.1),
            linger_ms=env.integer("EDGE_KAFKA_LINGER_MS", 0, minimum=0),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            log_format=env.choice("LOG_FORMAT", "json", LOG_FORMATS),
        )
