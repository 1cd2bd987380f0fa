"""How every service reaches Kafka: bootstrap servers plus optional TLS and SASL.

The variables follow the names managed offerings document (Strimzi, MSK, Confluent Cloud all
come down to a security protocol, a SASL mechanism with a user and password, and CA/client
certificate files), so one settings block serves every deployment.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.helpers import create_ssl_context

from common.env import Env, Secret, SettingsError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Bounds how long start-up waits for a cluster that is not reachable yet.
    startup_timeout_s: float = 60.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> KafkaSettings:
        env = Env(environ)
        bootstrap = env.optional_text("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap is None:
            raise SettingsError(
                "KAFKA_BOOTSTRAP_SERVERS: required, e.g. 'kafka-0.kafka:9092,kafka-1.kafka:9092'"
            )
        protocol = env.choice("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS)
        mechanism = None
        if protocol.startswith("SASL"):
            mechanism = env.choice("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", SASL_MECHANISMS)
        settings = cls(
            bootstrap_servers=bootstrap,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=env.optional_text("KAFKA_SASL_USERNAME"),
            sasl_password=env.secret("KAFKA_SASL_PASSWORD"),
            ssl_cafile=env.optional_text("KAFKA_SSL_CAFILE"),
            ssl_certfile=env.optional_text("KAFKA_SSL_CERTFILE"),
            ssl_keyfile=env.optional_text("KAFKA_SSL_KEYFILE"),
            startup_timeout_s=env.number("KAFKA_STARTUP_TIMEOUT_SECONDS", 60.0, minimum=0),
        )
        if mechanism and (settings.sasl_username is None or settings.sasl_password is None):
            raise SettingsError(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: required when "
                f"KAFKA_SECURITY_PROTOCOL={protocol}"
            )
        return settings

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self._ssl_context()
        if self.sasl_mechanism is not None:
            assert self.sasl_password is not None  # enforced by from_environ
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.reveal()
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context
