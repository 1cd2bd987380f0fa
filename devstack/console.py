"""What `make run` prints: each service's lines under its name, and what to try once it is up.

The services log in the console format (`LOG_FORMAT=console`, see common/logs.py); their
output (stderr too, so a traceback keeps its service's name) is piped through here, one
thread per service, and written whole lines at a time so that services never cut into one
another's lines.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Mapping
from typing import IO, Final

# The README's sample: an SMS delivery report for tracking id U01TXzkxMjM0NTY3.
SAMPLE_TRACKING_ID: Final = "U01TXzkxMjM0NTY3"
SAMPLE: Final = (
    '{"origin":"SMS_MT","code":"N202","status":"Delivered","to":"14155550123",'
    f'"tracking-id":"{SAMPLE_TRACKING_ID}","timestamp":"2024-03-05T14:22:47+00:00"}}'
)
COLORS: Final = {"edge": "\x1b[36m", "processor": "\x1b[35m", "metrics": "\x1b[34m"}
BOLD: Final = "\x1b[1m"
RESET: Final = "\x1b[0m"
WIDTH: Final = max(len(name) for name in COLORS)


class Console:
    """Writes whole lines to `out`, from any thread."""

    def __init__(self, out: IO[str], *, color: bool) -> None:
        self._out = out
        self.color = color
        self._lock = threading.Lock()

    def paint(self, text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def write(self, text: str) -> None:
        with self._lock:
            self._out.write(text if text.endswith("\n") else text + "\n")
            self._out.flush()

    def prefix(self, service: str) -> str:
        return self.paint(service.ljust(WIDTH), COLORS.get(service, "")) + " │ "

    def relay(self, service: str, stream: IO[bytes]) -> threading.Thread:
        """Copy `stream` line by line, each under the service's name, until it closes."""

        def copy() -> None:
            prefix = self.prefix(service)
            for raw in iter(stream.readline, b""):
                self.write(prefix + raw.decode(errors="replace").rstrip("\n"))

        thread = threading.Thread(target=copy, name=f"relay-{service}", daemon=True)
        thread.start()
        return thread


def banner(
    *,
    cli: str,
    edge_url: str,
    processor_url: str,
    metrics_url: str,
    bootstrap: str,
    topics: Mapping[str, str],
    console: Console,
) -> str:
    """What `make run` prints once every service is ready: where things are, what to try.

    `cli` is how this shell reaches the console script (`.venv/bin/postback-pipeline` when
    the virtualenv is not activated).
    """
    heading = console.paint("postback-pipeline is running", BOLD) + " (Ctrl-C stops everything)"
    return "\n".join(
        [
            "",
            heading,
            f"  edge       {edge_url}/postbacks[/<source>]",
            f"  metrics    {edge_url}/metrics (edge), {processor_url}/metrics (processor),",
            f"             {metrics_url}/metrics (events, for dashboards)",
            f"  kafka      {bootstrap}",
            "",
            "Try:",
            "  # post a sample delivery report",
            f"  curl -i -X POST {edge_url}/postbacks/mt -H 'content-type: application/json' "
            f"-d {shlex.quote(SAMPLE)}",
            "  # what Kafka stored: the body byte for byte, and the event made of it",
            f"  {cli} dev tail {topics['raw']} {topics['events']} --count 2",
            "  # counted by the metrics service",
            f"  curl -s {metrics_url}/metrics | grep '^postback_events_total'",
            "  # its journey: each attempt, what the processor did with it, its event",
            f"  KAFKA_BOOTSTRAP_SERVERS={bootstrap} {cli} trace {SAMPLE_TRACKING_ID}",
            "",
        ]
    )
