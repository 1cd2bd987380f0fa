"""Structured JSON logs on stdout, one object a line, for every service.

Call sites add fields with `extra={"fields": {...}}`; the formatter flattens them into the
object so that log pipelines can filter on `reason`, `client` or `request_id` directly.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


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


class WithoutRecordContents(logging.Filter):
    """Drops the log lines that would print a Kafka record's value: at DEBUG, aiokafka's producer
    logs every value it sends, and a postback's value holds phone numbers and message text."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == _AIOKAFKA_PRODUCER and str(record.msg).startswith("Sending ("))


_AIOKAFKA_PRODUCER = "aiokafka.producer.producer"


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, aiokafka's) through one JSON handler on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(WithoutRecordContents())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
