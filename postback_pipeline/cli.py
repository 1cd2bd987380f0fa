"""`postback-pipeline COMMAND`: one command line for every part of the pipeline.

The services keep their modules (`python -m ingest` runs the edge as before); this only
dispatches, and gives each service a `--help` listing the settings it reads. A command's module
is imported when the command runs, so `trace` never loads the edge's web server.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from common.command_line import CommandParser, settings_help, variables_read

PROG: Final = "postback-pipeline"


def _load(target: str) -> Callable[..., Any]:
    """`package.module:name.attribute`, imported now."""
    module, _, path = target.partition(":")
    found: Any = importlib.import_module(module)
    for name in path.split("."):
        found = getattr(found, name)
    loaded: Callable[..., Any] = found
    return loaded


@dataclass(frozen=True, slots=True)
class Service:
    """A long-running service: no arguments of its own, settings from the environment."""

    main: str  # module:function, returns the exit status
    settings: str  # module:function building its settings from an environ mapping
    description: str

    def __call__(self, argv: Sequence[str], prog: str) -> int:
        parser = CommandParser(
            prog=prog,
            description=self.description,
            epilog=settings_help(variables_read(_load(self.settings))),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.parse_args(argv)  # --help, or a one-line error for anything else
        return int(_load(self.main)())


@dataclass(frozen=True, slots=True)
class Tool:
    """A command with arguments of its own: its `main(argv, prog=...)` parses them."""

    main: str

    def __call__(self, argv: Sequence[str], prog: str) -> int:
        return int(_load(self.main)(list(argv), prog=prog))


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    run: Callable[[Sequence[str], str], int]


COMMANDS: Final = (
    Command(
        "edge",
        "the HTTP edge: postbacks in, 200 once postbacks.raw has them",
        Service(
            "ingest.__main__:main",
            "ingest.settings:EdgeSettings.from_environ",
            "The HTTP edge: answers a provider's postbacks 200 once Kafka holds them "
            "(postbacks.raw), a fast 503 when it cannot.",
        ),
    ),
    Command(
        "processor",
        "postbacks.raw to postbacks.events (dedupe, enrich) and postbacks.dlq, exactly once",
        Service(
            "consumers.processor.__main__:main",
            "consumers.settings:ProcessorSettings.from_environ",
            "The processor: one event per distinct notification on postbacks.events, dead "
            "letters on postbacks.dlq, exactly once for read_committed readers.\n"
            "Exit status: 0 stopped, 2 invalid settings, 3 fenced, 1 a partition failed to open.",
        ),
    ),
    Command(
        "metrics",
        "postbacks.events to Prometheus metrics for dashboards and alerts",
        Service(
            "consumers.metrics.__main__:main",
            "consumers.metrics.settings:MetricsSettings.from_environ",
            "The metrics service: reads postbacks.events in its own group and exports "
            "delivery metrics on /metrics.",
        ),
    ),
    Command(
        "replay",
        "add the events a topic lacks: dead letters that parse now, or a range re-derived",
        Tool("consumers.replay:main"),
    ),
    Command(
        "trace",
        "where is my postback? a message's attempts, events and dead letters",
        Tool("consumers.trace.cli:main"),
    ),
    Command(
        "simulate",
        "act as the provider: post postbacks, retry, check exactly once",
        Tool("simulator.cli:main"),
    ),
    Command(
        "dev",
        "the development stack: `dev run` (make run), `dev tail TOPIC...`",
        Tool("devstack.__main__:main"),
    ),
)
BY_NAME: Final[Mapping[str, Command]] = {command.name: command for command in COMMANDS}


def overview() -> str:
    width = max(len(command.name) for command in COMMANDS)
    lines = [
        f"usage: {PROG} COMMAND [ARGS]    ({PROG} COMMAND --help: its options and settings)",
        "",
        "Postback ingestion: a thin HTTP edge into Kafka, exactly-once consumers behind it.",
        "",
        "commands:",
    ]
    lines += [f"  {command.name.ljust(width)}  {command.summary}" for command in COMMANDS]
    return "\n".join(lines)


def _version() -> str:
    try:
        return metadata.version("postback-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(overview(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        print(f"{PROG} {_version()}")
        return 0
    command = BY_NAME.get(args[0])
    if command is None:
        print(
            f"{PROG}: error: unknown command {args[0]!r}; one of "
            f"{', '.join(BY_NAME)} (see {PROG} --help)",
            file=sys.stderr,
        )
        return 2
    return command.run(args[1:], f"{PROG} {command.name}")
