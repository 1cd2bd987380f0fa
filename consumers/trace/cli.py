"""`postback-pipeline trace` (`python -m consumers.trace`): "where is my postback?"

Exit status: 0 something was found, 1 nothing was (an unknown id, or the wrong range), 2 the
arguments or settings are wrong, 3 Kafka could not answer (unreachable, no such topic), 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Final, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from common.command_line import CommandParser, settings_help, variables_read
from common.env import SettingsError
from common.kafka import KafkaSettings
from consumers.processor.identity import Identity
from consumers.replay import parse_time
from consumers.settings import ProcessorGroupSettings
from consumers.trace.find import Journey, Query, Topics, trace
from consumers.trace.journey import Coordinates
from consumers.trace.reader import Reader, TraceError
from consumers.trace.render import as_dict, as_table

FOUND: Final = 0
NOTHING_FOUND: Final = 1
USAGE: Final = 2
KAFKA_FAILED: Final = 3
INTERRUPTED: Final = 130
# The raw topic's default retention: older records are gone anyway.
DEFAULT_RANGE_MS: Final = 7 * 24 * 3600 * 1000
EVENT_ID: Final = re.compile(r"[0-9a-f]{32}")


def settings_read() -> list[str]:
    return [
        *variables_read(KafkaSettings.from_environ),
        "KAFKA_TOPIC_RAW",
        "PROCESSOR_GROUP_ID",
        "DEDUPE_IDENTITY_FIELDS",
    ]


def _coordinates(text: str) -> Coordinates:
    topic, _, rest = text.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not (topic and partition.isdigit() and rest.isdigit()):
        raise argparse.ArgumentTypeError(f"expected TOPIC:PARTITION:OFFSET, got {text!r}")
    return topic, int(partition), int(rest)


def _event_id(text: str) -> str:
    if not EVENT_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"an event id is 32 lower-case hex digits, got {text!r}")
    return text


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description=(
            "Where is my postback? Every raw record received for a message in a time range\n"
            "(each provider attempt), what the processor did with each (event, duplicate of\n"
            "which offset, dead letter and why, not processed yet), its events and its dead\n"
            "letters. Reads Kafka (read_committed) with the services' settings, only the\n"
            "partitions the key maps to; writes nothing and joins no consumer group."
        ),
        epilog=(
            "examples:\n"
            f"  {prog} U01TXzkxMjM0NTY3\n"
            f"  {prog} U01TXzkxMjM0NTY3 --since 2026-11-20T00:00:00Z --until 2026-11-21 --json\n"
            f"  {prog} --event-id 4eaa5e6188069e71eddf63b3ab22ad12\n"
            f"  {prog} --raw postbacks.raw:4:981       # an event's lineage, a dead letter's "
            "dlq-source-*\n"
            "exit status: 0 found, 1 nothing found, 2 usage or settings, 3 Kafka failed.\n\n"
            + settings_help(settings_read())
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to trace (one of)")
    what.add_argument("tracking_id", nargs="?", help="the provider's tracking id")
    what.add_argument("--event-id", type=_event_id, metavar="ID", help="an event's event_id")
    what.add_argument(
        "--raw", type=_coordinates, metavar="TOPIC:PARTITION:OFFSET", help="a raw record"
    )
    when = parser.add_argument_group("when it was received (by the edge)")
    when.add_argument("--since", help="ISO-8601 (UTC if no offset) or epoch ms; default 7 days ago")
    when.add_argument("--until", help="exclusive; default now")
    parser.add_argument("--json", action="store_true", help="print a JSON document")
    return parser


async def run_trace(
    settings: ProcessorGroupSettings, query: Query, since_ms: int, until_ms: int
) -> tuple[Journey, Topics]:
    topics = Topics(settings.topics.raw.name, settings.topics.events.name, settings.topics.dlq.name)
    options = settings.kafka.client_options()
    consumer = AIOKafkaConsumer(
        **options,
        client_id="postback-trace",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # Only records already written are read: a fetch has no reason to wait for more.
        fetch_max_wait_ms=50,
    )
    admin = AIOKafkaAdminClient(**options, client_id="postback-trace")
    try:
        await consumer.start()
        await admin.start()
        journey = await trace(
            Reader(consumer, admin),
            topics,
            query,
            group_id=settings.group_id,
            identity=Identity.from_fields(settings.identity_fields or None),
            since_ms=since_ms,
            until_ms=until_ms,
        )
    finally:
        await consumer.stop()
        await admin.close()
    return journey, topics


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "python -m consumers.trace",
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    out = sys.stdout if out is None else out
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    given = [args.tracking_id is not None, args.event_id is not None, args.raw is not None]
    if sum(given) != 1:
        parser.error("give one of: a tracking id, --event-id, --raw")
    query = Query(tracking_id=args.tracking_id, event_id=args.event_id, raw=args.raw)
    now_ms = int(time.time() * 1000)
    try:
        settings = ProcessorGroupSettings.from_environ(os.environ if environ is None else environ)
        since_ms = parse_time(args.since) if args.since else now_ms - DEFAULT_RANGE_MS
        until_ms = parse_time(args.until) if args.until else now_ms
    except (SettingsError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return USAGE
    if since_ms >= until_ms:
        print(f"{prog}: error: --since must come before --until", file=sys.stderr)
        return USAGE
    # The client's own complaints (each failed connection) would come before the one line that
    # says what failed; what the trace cannot recover from reaches it as an exception.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        journey, topics = asyncio.run(run_trace(settings, query, since_ms, until_ms))
    except KeyboardInterrupt:
        return INTERRUPTED
    except (KafkaError, OSError, TraceError) as error:
        print(
            f"{prog}: Kafka could not answer: {str(error) or type(error).__name__}", file=sys.stderr
        )
        return KAFKA_FAILED
    if args.json:
        print(orjson.dumps(as_dict(journey), option=orjson.OPT_INDENT_2).decode(), file=out)
    else:
        print(as_table(journey, (topics.raw, topics.events, topics.dlq)), file=out)
    return FOUND if journey.found else NOTHING_FOUND
