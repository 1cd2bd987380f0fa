"""Logs on stdout, one record a line: JSON for machines (the default), or a line for a person.

Call sites add fields with `extra={"fields": {...}}`; the JSON formatter flattens them into the
object so that log pipelines can filter on `reason`, `client` or `request_id` directly, and the
console formatter prints them as `key=value` after the message.

`LOG_FORMAT=console` is for a person at a terminal (`make run` sets it for its services): it
colours levels when the stream is a terminal (or `FORCE_COLOR` is set, as `make run` does for
the services it pipes) unless `NO_COLOR` is set, and quiets the Kafka client's and uvicorn's
INFO chatter at level INFO. In both formats the Kafka client's retry floods are throttled
(common/logthrottle.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Final

import orjson

from common.logthrottle import RepeatThrottle

# Libraries whose INFO lines narrate their own workings (group joins, metadata updates, server
# banners); at level INFO a console shows only their warnings and errors.
CHATTY: Final = ("aiokafka", "uvicorn.error")
# Loggers of this project: the console leaves their names out, since the message says enough.
OURS: Final = ("ingest", "consumers", "common", "devstack", "simulator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_RESET: Final = "\x1b[0m"
_DIM: Final = "\x1b[2m"
_LEVELS: Final = {
    logging.DEBUG: ("DEBUG", "\x1b[2m"),
    logging.INFO: ("INFO ", "\x1b[32m"),
    logging.WARNING: ("WARN ", "\x1b[33m"),
    logging.ERROR: ("ERROR", "\x1b[31m"),
    logging.CRITICAL: ("CRIT ", "\x1b[1;31m"),
}
FIELD_LIMIT: Final = 120  # characters of one field's value; the JSON format keeps it whole


class ConsoleFormatter(logging.Formatter):
    """`14:22:50.123 INFO  edge ready  topic=postbacks.raw port=8080`, local time.

    Other libraries' lines carry their logger's name in brackets, so a warning from aiokafka
    does not read as the service's own words.
    """

    def __init__(self, *, color: bool) -> None:
        super().__init__()
        self._color = color

    def _paint(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self._color else text

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        label, code = _LEVELS.get(record.levelno, (record.levelname[:5].ljust(5), ""))
        parts = [self._paint(f"{clock}.{int(record.msecs):03d}", _DIM), self._paint(label, code)]
        if not record.name.startswith(OURS):
            parts.append(self._paint(f"[{record.name}]", _DIM))
        parts.append(record.getMessage())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            parts.append(
                " ".join(
                    self._paint(f"{name}=", _DIM) + _field_text(value)
                    for name, value in fields.items()
                )
            )
        line = " ".join(parts)
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + row for row in trace.splitlines())
        return line


def _field_text(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > FIELD_LIMIT:
        text = text[: FIELD_LIMIT - 1] + "…"
    if text == "" or any(char.isspace() or char == '"' for char in text):
        return orjson.dumps(text).decode()
    return text


def use_color(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Colour for a terminal: never with `NO_COLOR` (no-color.org), always with `FORCE_COLOR`
    (what `make run` sets for the services whose output it pipes to a terminal)."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return environ.get("TERM") != "dumb" and stream.isatty()


class WithoutRecordContents(logging.Filter):
    """Drops the log lines that would print a Kafka record's value: at DEBUG, aiokafka's producer
    logs every value it sends, and a postback's value holds phone numbers and message text."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == _AIOKAFKA_PRODUCER and str(record.msg).startswith("Sending ("))


_AIOKAFKA_PRODUCER = "aiokafka.producer.producer"


def configure_logging(
    level: str = "INFO",
    log_format: str = "json",
    *,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Route every logger (ours, uvicorn's, aiokafka's) through one handler on stdout, with
    the Kafka client's repeated lines throttled (common/logthrottle.py)."""
    stream = sys.stdout if stream is None else stream
    handler = logging.StreamHandler(stream)
    if log_format == "console":
        color = use_color(stream, os.environ if environ is None else environ)
        handler.setFormatter(ConsoleFormatter(color=color))
    else:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatThrottle())  # the Kafka client's retry floods, once a minute
    handler.addFilter(WithoutRecordContents())  # no postback value in any log line
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    quiet = log_format == "console" and root.level == logging.INFO
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
