"""`postback-pipeline`: one command for every service and tool; each --help lists what it
reads; a wrong flag or setting stops it with status 2 and one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.command_line import variables_read
from consumers.metrics.settings import MetricsSettings
from consumers.settings import ProcessorSettings
from ingest.settings import EdgeSettings
from postback_pipeline.cli import BY_NAME, main

SCRIPT = Path(sys.executable).with_name("postback-pipeline")
# Per command, settings its --help must list (services: every one their settings read).
EXPECTED = {
    "edge": variables_read(EdgeSettings.from_environ),
    "processor": variables_read(ProcessorSettings.from_environ),
    "metrics": variables_read(MetricsSettings.from_environ),
    "replay": ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_RAW", "DEDUPE_WINDOW_SECONDS"],
    "trace": ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SASL_PASSWORD", "PROCESSOR_GROUP_ID"],
    "simulate": ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_EVENTS", "DEDUPE_IDENTITY_FIELDS"],
    "dev": ["DEVSTACK_EDGE_PORT", "DEVSTACK_KAFKA_PORT", "DEVSTACK_KAFKA_HEAP"],
}


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What --help prints; argparse exits, the simulator returns its status."""
    try:
        status: object = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    assert status == 0
    return capsys.readouterr().out


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KAFKA_")}
    return subprocess.run(
        args, capture_output=True, text=True, env={**environ, **(env or {})}, timeout=60
    )


def test_every_command_is_there() -> None:
    """The services, the tools and the development stack, by the names the docs use."""
    assert set(BY_NAME) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_commands_help_lists_its_settings_with_defaults(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`postback-pipeline NAME --help` names the variables it reads, their defaults and what
    they mean (from README), and none it reads is left without one."""
    text = help_of([name, "--help"], capsys)

    assert text.startswith(f"usage: postback-pipeline {name}")
    assert "settings (environment variables" in text
    for variable in EXPECTED[name]:
        assert variable in text, variable
    assert "also:" not in text


def test_a_service_help_shows_a_default_and_its_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    """The edge's port: its default and what it is, as README says."""
    lines = help_of(["edge", "--help"], capsys).splitlines()

    at = lines.index("  EDGE_HOST, EDGE_PORT  [default 127.0.0.1, 8080]")
    assert lines[at + 1].strip().startswith("where the edge listens")


def test_the_overview_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`postback-pipeline --help` is the map: every command with one line."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out

    for name in EXPECTED:
        assert f"\n  {name} " in text


@pytest.mark.parametrize(
    "argv",
    [
        ["edge", "--port", "8081"],
        ["trace", "--bogus"],
        ["replay"],
        ["dev", "explode"],
        ["simulate", "--count", "many"],
        ["nonsense"],
        [],
    ],
)
def test_a_wrong_command_or_flag_is_one_line_and_status_2(argv: list[str]) -> None:
    """Through the installed console script: status 2, one line on stderr, no traceback."""
    result = run(str(SCRIPT), *argv)

    assert result.returncode == 2, result.stderr
    if argv:
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "env", "variable"),
    [
        (["edge"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EDGE_PORT": "eighty"}, "EDGE_PORT"),
        (["processor"], {}, "KAFKA_BOOTSTRAP_SERVERS"),
        (
            ["metrics"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "LOG_FORMAT": "pretty"},
            "LOG_FORMAT",
        ),
        (
            ["trace", "T1"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL",
        ),
        (["dev", "run"], {"DEVSTACK_EDGE_PORT": "http"}, "DEVSTACK_EDGE_PORT"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_status_2(
    argv: list[str], env: dict[str, str], variable: str
) -> None:
    """Nothing starts: the variable is named in one line."""
    result = run(str(SCRIPT), *argv, env=env)

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert variable in line


def test_python_m_still_runs_the_modules() -> None:
    """`python -m ingest` and the tools' modules keep working beside the console script."""
    service = run(sys.executable, "-m", "ingest")
    tool = run(sys.executable, "-m", "consumers.trace", "--help")

    assert service.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in service.stderr
    assert tool.returncode == 0
    assert tool.stdout.startswith("usage: python -m consumers.trace")


def test_a_trace_without_kafka_says_so_in_one_line() -> None:
    """An unreachable cluster is status 3 and one line, not the client's retry chatter."""
    result = run(str(SCRIPT), "trace", "T1", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})

    assert result.returncode == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith("postback-pipeline trace: Kafka could not answer:")
