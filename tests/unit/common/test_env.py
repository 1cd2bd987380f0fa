"""Settings from the environment, as every service reads them: one default per variable, every
variable checked the same way, and a malformed one named when start-up stops."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from common.env import SettingsError, settings_or_exit
from consumers.metrics.settings import MetricsSettings
from consumers.settings import ProcessorSettings
from ingest.settings import EdgeSettings

MINIMAL = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "EVENTS_PSEUDONYM_KEY": "k" * 32}
SERVICES: dict[str, Callable[[Mapping[str, str]], object]] = {
    "edge": EdgeSettings.from_environ,
    "processor": ProcessorSettings.from_environ,
    "metrics": MetricsSettings.from_environ,
}
PORTS = {"edge": "EDGE_PORT", "processor": "PROCESSOR_PORT", "metrics": "METRICS_PORT"}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("value", ["65536", "-1", "http"])
def test_every_port_outside_0_to_65535_is_refused_naming_its_variable(
    service: str, value: str
) -> None:
    """A port no socket can take stops start-up with the variable's name, for every service."""
    variable = PORTS[service]

    with pytest.raises(SettingsError, match=f"^{variable}: "):
        SERVICES[service]({**MINIMAL, variable: value})


@pytest.mark.parametrize("service", SERVICES)
def test_every_port_from_0_to_65535_is_taken(service: str) -> None:
    """0 (the system picks a free port, as the tests do) and 65535 are valid ports."""
    variable = PORTS[service]

    for value in (0, 65535):
        settings = SERVICES[service]({**MINIMAL, variable: str(value)})
        assert settings.port == value  # type: ignore[attr-defined]


@pytest.mark.parametrize("service", SERVICES)
def test_log_level_is_one_setting_for_every_service(service: str) -> None:
    """LOG_LEVEL takes the same levels everywhere, and a typo is named."""
    settings = SERVICES[service]({**MINIMAL, "LOG_LEVEL": "DEBUG"})
    assert settings.log_level == "DEBUG"  # type: ignore[attr-defined]
    assert SERVICES[service](MINIMAL).log_level == "INFO"  # type: ignore[attr-defined]
    with pytest.raises(SettingsError, match=r"^LOG_LEVEL: expected one of DEBUG, INFO, WARNING"):
        SERVICES[service]({**MINIMAL, "LOG_LEVEL": "loud"})


@pytest.mark.parametrize("service", SERVICES)
def test_an_empty_variable_means_its_default(service: str) -> None:
    """Deployment templates render unset values as empty strings: those mean the default, as
    leaving the variable out does."""
    variables = [
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_TOPIC_PARTITIONS",
        "KAFKA_TOPIC_RAW",
        "KAFKA_CREATE_TOPICS",
        "LOG_LEVEL",
        PORTS[service],
    ]

    assert SERVICES[service]({**MINIMAL, **dict.fromkeys(variables, " ")}) == SERVICES[service](
        MINIMAL
    )


def test_a_topics_partitions_default_to_the_shared_count() -> None:
    """KAFKA_TOPIC_PARTITIONS sets every topic's partitions, unless a topic has its own."""
    settings = ProcessorSettings.from_environ(
        {**MINIMAL, "KAFKA_TOPIC_PARTITIONS": "12", "KAFKA_TOPIC_DLQ_PARTITIONS": "3"}
    )

    assert [spec.partitions for spec in settings.topics.all()] == [12, 12, 3]


def test_seconds_in_the_variable_are_milliseconds_in_the_settings() -> None:
    """DEDUPE_WINDOW_SECONDS is written in seconds; the processor works in milliseconds."""
    settings = ProcessorSettings.from_environ({**MINIMAL, "DEDUPE_WINDOW_SECONDS": "3600"})

    assert settings.dedupe_window_ms == 3_600_000
    assert ProcessorSettings.from_environ(MINIMAL).dedupe_window_ms == 6 * 3_600_000


def test_a_password_is_taken_verbatim() -> None:
    """Spaces around a password may be part of it: only other values are stripped."""
    settings = EdgeSettings.from_environ(
        {**MINIMAL, "EDGE_BASIC_AUTH_USER": " provider ", "EDGE_BASIC_AUTH_PASSWORD": " pass "}
    )

    assert settings.basic_auth_user == "provider"
    assert settings.basic_auth_password is not None
    assert settings.basic_auth_password.reveal() == " pass "


def test_invalid_settings_exit_2_with_one_line_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A service with a malformed variable exits with status 2 and says which, on stderr."""
    with pytest.raises(SystemExit) as stopped:
        settings_or_exit(EdgeSettings.from_environ, {**MINIMAL, "EDGE_PORT": "80800"}, "ingest")

    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "ingest: invalid settings: EDGE_PORT: must be at most 65535, got 80800\n"
    )
