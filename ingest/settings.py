"""The edge's settings: one frozen object, built once from the environment at start-up.

Secure by default where it faces the internet: with no allowlist (EDGE_ALLOWED_CIDRS defaults
to every address, so that `make run` on loopback needs no configuration) and no Basic
credentials, the edge starts only on a loopback address. Listening anywhere else that way would
accept forged delivery reports from anyone, so it is refused unless EDGE_ALLOW_ANY_SENDER=true
says it is meant.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from common.env import (
    IPNetwork,
    Secret,
    Settings,
    SettingsError,
    flag,
    integer,
    items,
    log_format_setting,
    log_level_setting,
    networks,
    number,
    port_number,
    secret,
    section,
    setting,
    text,
)
from common.kafka import KafkaSettings
from common.topics import TopicSettings
from ingest.paths import SOURCE_PATTERN

EVERY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

# The provider gives up on an answer after 10 s; the edge must have answered well before.
_UNDER_PROVIDER_TIMEOUT = number(minimum=0.05, below=10, why="the provider's 10 s timeout")


def source_labels(variable: str, raw: str) -> frozenset[str]:
    sources = frozenset(items(variable, raw))
    for source in sources:
        if not SOURCE_PATTERN.fullmatch(source):
            raise SettingsError(f"{variable}: {source!r} does not match [a-z0-9_-]{{1,64}}")
    return sources


@dataclass(frozen=True, slots=True)
class EdgeSettings(Settings):
    kafka: KafkaSettings = section(KafkaSettings.from_environ)
    topics: TopicSettings = section(TopicSettings.from_environ)
    host: str = setting("EDGE_HOST", text, "127.0.0.1")
    port: int = setting("EDGE_PORT", port_number, 8080)
    # Answering 503 well before the provider's 10 s lets it retry instead of counting a
    # timeout, and leaves room for the network on both sides.
    answer_deadline_s: float = setting("EDGE_ANSWER_DEADLINE_SECONDS", _UNDER_PROVIDER_TIMEOUT, 5.0)
    max_body_bytes: int = setting("EDGE_MAX_BODY_BYTES", integer(minimum=1), 256 * 1024)
    # Request line and header fields together. httptools itself buffers heads of any size; the
    # provider's are under 1 KiB, and proxies in front add a few hundred bytes.
    max_header_bytes: int = setting("EDGE_MAX_HEADER_BYTES", integer(minimum=1024), 64 * 1024)
    # From a connection's start, or a request's first byte, to the end of its header fields;
    # also how long the unread rest of an already answered request may take. The provider
    # writes a whole request at once, so this only ever cuts off clients that stall on purpose
    # or broke: each one holds one of `max_connections` until then.
    header_timeout_s: float = setting("EDGE_HEADER_TIMEOUT_SECONDS", _UNDER_PROVIDER_TIMEOUT, 5.0)
    allowed_networks: tuple[IPNetwork, ...] = setting("EDGE_ALLOWED_CIDRS", networks, EVERY_ADDRESS)
    trusted_proxies: tuple[IPNetwork, ...] = setting("EDGE_TRUSTED_PROXIES", networks, ())
    basic_auth_user: str | None = setting("EDGE_BASIC_AUTH_USER", text, None)
    basic_auth_password: Secret | None = setting("EDGE_BASIC_AUTH_PASSWORD", secret, None)
    # The operator's word that an edge anyone may post to, off loopback, is meant.
    allow_any_sender: bool = setting("EDGE_ALLOW_ANY_SENDER", flag, False)
    # Empty: any source label matching SOURCE_PATTERN is accepted.
    sources: frozenset[str] = setting("EDGE_SOURCES", source_labels, frozenset())
    # The provider keeps one connection open for hours; this must outlast the idle timeout of
    # every load balancer in front (AWS ALB 60 s, GCP 600 s by default).
    keepalive_timeout_s: float = setting("EDGE_KEEPALIVE_TIMEOUT_SECONDS", number(minimum=1), 650.0)
    drain_timeout_s: float = setting("EDGE_DRAIN_TIMEOUT_SECONDS", number(minimum=0), 20.0)
    shutdown_delay_s: float = setting("EDGE_SHUTDOWN_DELAY_SECONDS", number(minimum=0), 0.0)
    max_connections: int = setting("EDGE_MAX_CONNECTIONS", integer(minimum=1), 1000)
    retry_after_s: int = setting("EDGE_RETRY_AFTER_SECONDS", integer(minimum=0), 30)
    # The provider retries a refused postback about every 5 minutes, 5 times, then drops it:
    # a postback refused when an outage starts is gone once the outage outlasts this.
    provider_retry_horizon_s: float = setting(
        "EDGE_PROVIDER_RETRY_HORIZON_SECONDS", number(minimum=1), 1500.0
    )
    kafka_probe_interval_s: float = setting("EDGE_KAFKA_PROBE_SECONDS", number(minimum=0.1), 5.0)
    linger_ms: int = setting("EDGE_KAFKA_LINGER_MS", integer(minimum=0), 0)
    log_level: str = log_level_setting()
    log_format: str = log_format_setting()

    def __post_init__(self) -> None:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise SettingsError(
                "EDGE_BASIC_AUTH_USER and EDGE_BASIC_AUTH_PASSWORD: set both, or neither"
            )
        if self.exposed_to_anyone and not self.allow_any_sender:
            raise SettingsError(
                f"EDGE_HOST={self.host} is not loopback, and anyone could post: "
                "EDGE_ALLOWED_CIDRS admits every address and EDGE_BASIC_AUTH_USER/"
                "EDGE_BASIC_AUTH_PASSWORD are not set. Set EDGE_ALLOWED_CIDRS to the provider's "
                "addresses, or the Basic credentials, or EDGE_ALLOW_ANY_SENDER=true to accept "
                "postbacks from anyone"
            )

    @property
    def exposed_to_anyone(self) -> bool:
        """Every address may post, without credentials, to an edge beyond loopback."""
        return (
            self.basic_auth_user is None
            and any(network.prefixlen == 0 for network in self.allowed_networks)
            and not is_loopback(self.host)
        )


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the edge on this machine (a name other than
    localhost may resolve to anything, so it does not count)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
