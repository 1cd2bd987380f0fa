"""What `make run` prints: each service's lines under its name, and the commands to try."""

from __future__ import annotations

import io
import re
import shlex

import orjson

from consumers.processor.parse import parse
from devstack.console import SAMPLE, SAMPLE_TRACKING_ID, Console, banner
from ingest.keys import partition_key

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def make_banner(color: bool) -> str:
    return banner(
        cli=".venv/bin/postback-pipeline",
        edge_url="http://127.0.0.1:8081",
        processor_url="http://127.0.0.1:9111",
        metrics_url="http://127.0.0.1:9112",
        bootstrap="127.0.0.1:29092",
        topics={"raw": "my.raw", "events": "my.events"},
        console=Console(io.StringIO(), color=color),
    )


def test_the_banner_gives_runnable_commands_for_this_stack() -> None:
    """Post the sample, tail raw and events, see the metrics, trace the sample: with this
    run's ports, topics and broker, and the command as this shell reaches it."""
    lines = make_banner(color=False).splitlines()
    commands = [line.strip() for line in lines if line.startswith("  ") and "#" not in line[:4]]
    post = next(line for line in commands if line.startswith("curl -i -X POST"))

    words = shlex.split(post)
    assert words[4] == "http://127.0.0.1:8081/postbacks/mt"
    assert orjson.loads(words[-1])["tracking-id"] == SAMPLE_TRACKING_ID
    assert ".venv/bin/postback-pipeline dev tail my.raw my.events --count 2" in commands
    assert "curl -s http://127.0.0.1:9112/metrics | grep '^postback_events_total'" in commands
    assert (
        f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092 .venv/bin/postback-pipeline trace "
        f"{SAMPLE_TRACKING_ID}" in commands
    )


def test_the_sample_is_a_postback_the_processor_accepts() -> None:
    """The sample parses into a delivery report keyed by its tracking id."""
    assert parse(SAMPLE.encode(), "application/json").code == "N202"
    assert partition_key(SAMPLE.encode()) == SAMPLE_TRACKING_ID.encode()


def test_colour_only_decorates() -> None:
    """With colour the banner says the same, once the escape codes are taken out."""
    assert ANSI.search(make_banner(color=True))
    assert ANSI.sub("", make_banner(color=True)) == make_banner(color=False)


def test_each_service_line_is_written_whole_under_its_name() -> None:
    """Lines from a service's output, however they arrive, come out one per line with its
    name in a fixed-width column; nothing is lost at the end."""
    out = io.StringIO()
    console = Console(out, color=False)
    source = io.BytesIO(b"12:00:00.001 INFO  edge ready port=8080\nno newline at the end")

    console.relay("edge", source).join(timeout=5)

    assert out.getvalue().splitlines() == [
        "edge      │ 12:00:00.001 INFO  edge ready port=8080",
        "edge      │ no newline at the end",
    ]
