"""Logs: JSON for machines by default, a readable line for a person with LOG_FORMAT=console."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator

import orjson
import pytest

from common.logs import ConsoleFormatter, configure_logging, use_color

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def record(
    message: str,
    *args: object,
    name: str = "consumers.processor",
    level: int = logging.INFO,
    fields: dict[str, object] | None = None,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, args, None)
    if fields is not None:
        made.fields = fields
    return made


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers; put them back for the next test."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    chatty = {name: logging.getLogger(name).level for name in ("aiokafka", "uvicorn.error")}
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, level in chatty.items():
        logging.getLogger(name).setLevel(level)


def test_a_console_line_has_time_level_message_and_fields() -> None:
    """A person reads when, how bad, what, and the record's fields as key=value."""
    line = ConsoleFormatter(color=False).format(
        record("edge ready", fields={"topic": "postbacks.raw", "port": 8080})
    )

    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} INFO  edge ready topic=postbacks\.raw port=8080", line
    ), line


def test_console_fields_stay_one_token_each() -> None:
    """Values with spaces are quoted, lists read as JSON, long values are cut: one line."""
    line = ConsoleFormatter(color=False).format(
        record(
            "refused",
            level=logging.WARNING,
            fields={"reason": "bad thing here", "partitions": [0, 1], "blob": "x" * 500},
        )
    )

    assert ' WARN  refused reason="bad thing here" partitions=[0,1] blob=' in line
    assert "x" * 200 not in line
    assert "\n" not in line


def test_other_libraries_lines_name_their_logger() -> None:
    """A warning from aiokafka is marked as aiokafka's, not read as the service's own."""
    line = ConsoleFormatter(color=False).format(
        record("Unable connect to node with id %s", 1, name="aiokafka", level=logging.ERROR)
    )

    assert line.endswith("ERROR [aiokafka] Unable connect to node with id 1")


def test_an_exception_follows_its_line_indented() -> None:
    """A traceback stays under the line that logged it, indented so the eye skips it."""
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", level=logging.ERROR)
        failed.exc_info = sys.exc_info()
    lines = ConsoleFormatter(color=False).format(failed).splitlines()

    assert lines[0].endswith("ERROR failed")
    assert lines[-1] == "    ValueError: boom"


def test_colour_marks_levels_and_disappears_without_it() -> None:
    """Coloured, the text is the same once the escape codes are taken out."""
    ready = record("ready", level=logging.WARNING)  # one record: one time stamp for both
    plain = ConsoleFormatter(color=False).format(ready)
    coloured = ConsoleFormatter(color=True).format(ready)

    assert ANSI.search(coloured)
    assert not ANSI.search(plain)
    assert ANSI.sub("", coloured) == plain


@pytest.mark.parametrize(
    ("terminal", "environ", "expected"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
        (False, {"FORCE_COLOR": "1"}, True),
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_only_for_a_terminal_that_wants_it(
    terminal: bool, environ: dict[str, str], expected: bool
) -> None:
    """NO_COLOR always wins; FORCE_COLOR colours a pipe (make run's); else only a terminal."""
    stream = Terminal() if terminal else io.StringIO()

    assert use_color(stream, environ) is expected


def test_json_is_the_default_and_one_object_a_line(restore_logging: None) -> None:
    """Production logs stay JSON: the fields flattened into the object."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, environ={})

    logging.getLogger("ingest").info("edge ready", extra={"fields": {"port": 8080}})

    entry = orjson.loads(stream.getvalue())
    assert entry["msg"] == "edge ready"
    assert entry["port"] == 8080
    assert entry["level"] == "info"


def test_console_at_info_quiets_the_kafka_clients_chatter(restore_logging: None) -> None:
    """At INFO the console shows aiokafka's warnings but not its narration; DEBUG shows all."""
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream, environ={})

    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group 'x'")
    logging.getLogger("uvicorn.error").info("Started server process [1]")
    logging.getLogger("aiokafka").warning("Unable to request metadata")
    logging.getLogger("consumers.processor").info("partition ready")

    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "WARN  [aiokafka] Unable to request metadata",
        "INFO  partition ready",
    ]

    configure_logging("DEBUG", "console", stream=stream, environ={})
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group 'x'")
    assert stream.getvalue().splitlines()[-1].endswith("Joined group 'x'")


def test_the_kafka_producers_record_values_never_reach_the_log(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """aiokafka logs each value it sends at DEBUG; a postback's value holds a subscriber's number
    and text, so that line is dropped while the client's other debug lines stay."""
    configure_logging("DEBUG", stream=sys.stdout)
    producer = logging.getLogger("aiokafka.producer.producer")
    producer.debug("Sending (key=%s value=%s) to %s", b"k", b'{"from":"447700900461"}', "tp")
    producer.debug("Flushing accumulated records in producer.")
    output = capsys.readouterr().out
    assert "447700900461" not in output
    assert "Flushing accumulated records" in output
