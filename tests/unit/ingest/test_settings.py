"""Edge settings: documented defaults, and a clear error naming any bad variable."""

from __future__ import annotations

import ipaddress

import pytest

from common.env import SettingsError
from ingest.settings import EdgeSettings

MINIMAL = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}


def test_defaults_suit_the_provider() -> None:
    """Out of the box: a 5 s deadline, 256 KiB bodies, 64 KiB heads in 5 s, everyone allowed,
    the three topics."""
    settings = EdgeSettings.from_environ(MINIMAL)
    assert settings.answer_deadline_s == 5.0
    assert settings.max_body_bytes == 256 * 1024
    assert settings.max_header_bytes == 64 * 1024
    assert settings.header_timeout_s == 5.0
    assert settings.allowed_networks == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    assert settings.trusted_proxies == ()
    assert settings.keepalive_timeout_s > 600
    assert settings.topics.raw.name == "postbacks.raw"
    assert settings.topics.raw.retention_ms == 7 * 24 * 3600 * 1000
    assert (settings.topics.events.name, settings.topics.dlq.name) == (
        "postbacks.events",
        "postbacks.dlq",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EDGE_MAX_BODY_BYTES", "lots"),
        ("EDGE_MAX_BODY_BYTES", "0"),
        ("EDGE_ANSWER_DEADLINE_SECONDS", "10"),
        ("EDGE_HEADER_TIMEOUT_SECONDS", "10"),
        ("EDGE_HEADER_TIMEOUT_SECONDS", "0"),
        ("EDGE_MAX_HEADER_BYTES", "100"),
        ("EDGE_ALLOWED_CIDRS", "10.0.0.0/8,not-a-cidr"),
        ("EDGE_SOURCES", "mt,Bad Label"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_CREATE_TOPICS", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "pretty"),
    ],
)
def test_a_bad_value_fails_fast_naming_its_variable(variable: str, value: str) -> None:
    """A typo stops start-up with the variable's name, not a mystery later."""
    with pytest.raises(SettingsError, match=variable):
        EdgeSettings.from_environ({**MINIMAL, variable: value})


def test_bootstrap_servers_are_required() -> None:
    """Without KAFKA_BOOTSTRAP_SERVERS there is nowhere to store postbacks."""
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS"):
        EdgeSettings.from_environ({})


def test_secrets_never_show_in_repr() -> None:
    """Settings can be logged whole without leaking the Basic or SASL passwords."""
    settings = EdgeSettings.from_environ(
        {
            **MINIMAL,
            "EDGE_BASIC_AUTH_USER": "provider",
            "EDGE_BASIC_AUTH_PASSWORD": "hunter2-basic",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "edge",
            "KAFKA_SASL_PASSWORD": "hunter2-sasl",
        }
    )
    assert "hunter2" not in repr(settings)
    assert settings.kafka.client_options()["sasl_plain_password"] == "hunter2-sasl"
    assert settings.kafka.client_options()["sasl_mechanism"] == "SCRAM-SHA-512"


def test_sasl_needs_both_credentials_and_basic_auth_needs_both_halves() -> None:
    """Half a credential is a deployment mistake, reported as such."""
    with pytest.raises(SettingsError, match="KAFKA_SASL_USERNAME"):
        EdgeSettings.from_environ({**MINIMAL, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="EDGE_BASIC_AUTH_USER"):
        EdgeSettings.from_environ({**MINIMAL, "EDGE_BASIC_AUTH_USER": "provider"})
