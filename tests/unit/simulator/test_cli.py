"""`python -m simulator` as a script sees it: arguments, the report, the exit status."""

from __future__ import annotations

import base64
import io

import orjson
import pytest

from devstack.kafka import free_port
from simulator.cli import CHECK_FAILED, OK, USAGE, run
from tests.unit.simulator.scripted_server import ScriptedServer, refuse_first_postback


async def simulate(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await run(list(argv), out=out, err=err, environ=environ or {})
    return status, out.getvalue(), err.getvalue()


async def test_a_run_reports_every_postback_acked_as_json() -> None:
    """A clean run exits 0 and its JSON report says every postback was acked first time."""
    async with ScriptedServer() as server:
        status, out, _ = await simulate(
            "--url", server.url, "--count", "40", "--seed", "3", "--json", "--quiet"
        )
    report = orjson.loads(out)
    assert status == OK
    assert (report["postbacks"], report["acked"], report["retried"]) == (40, 40, 0)
    assert report["statuses"] == {"200": 40}
    assert report["seed"] == 3
    assert report["connections"] == 1
    assert len(server.requests) == 40


async def test_the_table_report_names_retries_and_given_up_postbacks() -> None:
    """Without --json the report is a table a person can read at a glance."""
    async with ScriptedServer(refuse_first_postback()) as server:
        status, out, err = await simulate(
            "--url", server.url, "--count", "3", "--retry-delay", "0.01", "--max-retries", "1"
        )
    assert status == OK  # given-up postbacks are reported; only a failed check fails a run
    assert "acked                   2" in out
    assert "retried                 1" in out
    assert "given up                1" in out
    assert ": 2 attempts, last 503" in out
    assert "503: 2" in out
    assert "posting 3 postbacks" in err  # progress goes to stderr, the report to stdout


async def test_the_password_can_come_from_the_environment() -> None:
    """--user with $SIMULATOR_PASSWORD keeps the secret off the command line."""
    async with ScriptedServer() as server:
        status, _, _ = await simulate(
            "--url", server.url, "--count", "1", "--user", "provider", "--quiet",
            environ={"SIMULATOR_PASSWORD": "s3cret"},
        )  # fmt: skip
    assert status == OK
    expected = "Basic " + base64.b64encode(b"provider:s3cret").decode()
    assert server.requests[0].headers["authorization"] == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--xml-share", "1.5"],
        ["--malformed-share", "nan"],
        ["--count", "0"],
        ["--answer-timeout", "0"],
        ["--max-retries", "-1"],
        ["--url", "ftp://127.0.0.1/x"],
        ["--user", "provider"],
        ["--password", "alone"],
        ["--check-events"],
        ["--bootstrap-servers", "127.0.0.1:9092"],
        ["--no-such-option"],
    ],
)
async def test_usage_errors_exit_2_before_anything_is_sent(argv: list[str]) -> None:
    """A wrong argument is a usage error (status 2), and no postback leaves the machine."""
    async with ScriptedServer() as server:
        status, _, _ = await simulate("--url", server.url, *argv)
    assert status == USAGE
    assert server.requests == []


async def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help explains every option and the exit statuses."""
    status, _, _ = await simulate("--help")
    assert status == OK
    text = capsys.readouterr().out
    for option in ("--drop-answers", "--retry-delay", "--check-events", "exit status"):
        assert option in text


async def test_a_check_that_cannot_reach_kafka_fails_the_run() -> None:
    """An events check that cannot run is a failed check (status 1), never a silent pass."""
    async with ScriptedServer() as server:
        status, out, _ = await simulate(
            "--url", server.url, "--count", "2", "--json", "--quiet", "--check-events",
            "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--wait", "0",
        )  # fmt: skip
    assert status == CHECK_FAILED
    check = orjson.loads(out)["check"]
    assert check["passed"] is False
    assert "could not run" in check["error"]
