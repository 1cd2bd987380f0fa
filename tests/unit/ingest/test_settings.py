"""Edge settings: documented defaults, and a clear error naming any bad variable."""

from __future__ import annotations

import ipaddress

import pytest

from common.env import SettingsError
from ingest.settings import EdgeSettings, is_loopback

MINIMAL = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}


def test_defaults_suit_the_provider() -> None:
    """Out of the box: a 5 s deadline, 256 KiB bodies, 64 KiB heads in 5 s, every address
    allowed (on loopback, see below), the three topics."""
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


BASIC = {"EDGE_BASIC_AUTH_USER": "provider", "EDGE_BASIC_AUTH_PASSWORD": "pw"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "edge.internal"])
@pytest.mark.parametrize("cidrs", [None, "::/0", "198.51.100.0/24,0.0.0.0/0", "198.51.100.7/0"])
def test_an_edge_anyone_may_post_to_does_not_start_beyond_loopback(
    host: str, cidrs: str | None
) -> None:
    """Listening beyond loopback while every address may post without credentials would
    accept forged delivery reports from anyone: start-up stops and says what to set."""
    environ = {**MINIMAL, "EDGE_HOST": host}
    if cidrs is not None:
        environ["EDGE_ALLOWED_CIDRS"] = cidrs

    with pytest.raises(SettingsError) as refused:
        EdgeSettings.from_environ(environ)

    for variable in (
        f"EDGE_HOST={host}",
        "EDGE_ALLOWED_CIDRS",
        "EDGE_BASIC_AUTH_USER",
        "EDGE_ALLOW_ANY_SENDER=true",
    ):
        assert variable in str(refused.value)


@pytest.mark.parametrize(
    "way",
    [
        {"EDGE_ALLOWED_CIDRS": "198.51.100.0/24,2001:db8::/32"},
        BASIC,
        {"EDGE_ALLOW_ANY_SENDER": "1"},
    ],
    ids=["allowlist", "credentials", "explicit opt-in"],
)
def test_an_allowlist_credentials_or_the_opt_in_let_the_edge_listen_anywhere(
    way: dict[str, str],
) -> None:
    """Any of the three makes an edge reachable from other machines a deliberate choice."""
    settings = EdgeSettings.from_environ({**MINIMAL, "EDGE_HOST": "0.0.0.0", **way})

    assert settings.exposed_to_anyone is ("EDGE_ALLOW_ANY_SENDER" in way)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_on_loopback_the_edge_needs_no_configuration(host: str) -> None:
    """`make run` and the tests post from this machine: nothing to set there."""
    settings = EdgeSettings.from_environ({**MINIMAL, "EDGE_HOST": host})

    assert is_loopback(settings.host)
    assert not settings.exposed_to_anyone
