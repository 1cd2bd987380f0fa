"""How every service reaches Kafka: bootstrap servers plus optional TLS and SASL.

The variables follow the names managed offerings document (Strimzi, MSK, Confluent Cloud all
come down to a security protocol, a SASL mechanism with a user and password, and CA/client
certificate files), so one settings block serves every deployment.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.helpers import create_ssl_context

from common.env import (
    Secret,
    Settings,
    SettingsError,
    choice,
    number,
    required,
    secret,
    setting,
    text,
)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSettings(Settings):
    bootstrap_servers: str = required(
        "KAFKA_BOOTSTRAP_SERVERS", text, example="'kafka-0.kafka:9092,kafka-1.kafka:9092'"
    )
    security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", choice(*SECURITY_PROTOCOLS), "PLAINTEXT"
    )
    # Used with the SASL protocols only.
    sasl_mechanism: str = setting("KAFKA_SASL_MECHANISM", choice(*SASL_MECHANISMS), "SCRAM-SHA-512")
    sasl_username: str | None = setting("KAFKA_SASL_USERNAME", text, None)
    sasl_password: Secret | None = setting("KAFKA_SASL_PASSWORD", secret, None)
    ssl_cafile: str | None = setting("KAFKA_SSL_CAFILE", text, None)
    ssl_certfile: str | None = setting("KAFKA_SSL_CERTFILE", text, None)
    ssl_keyfile: str | None = setting("KAFKA_SSL_KEYFILE", text, None)
    # Bounds how long start-up waits for a cluster that is not reachable yet.
    startup_timeout_s: float = setting("KAFKA_STARTUP_TIMEOUT_SECONDS", number(minimum=0), 60.0)

    def __post_init__(self) -> None:
        if self.uses_sasl and (self.sasl_username is None or self.sasl_password is None):
            raise SettingsError(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required when "
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
            )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self._ssl_context()
        if self.uses_sasl:
            assert self.sasl_password is not None  # enforced by __post_init__
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.reveal()
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context
