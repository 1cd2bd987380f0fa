"""`python -m simulator`: arguments in, a report out, and an exit status a script can test.

Exit status: 0 the run ended (and the events check, when asked for, passed); 1 the events
check failed or could not run; 2 the arguments or settings are wrong; 130 interrupted
(Ctrl-C or SIGTERM: sending stops, the report covers what was sent, no check is made).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TextIO, TypeVar

import orjson
from aiokafka.errors import KafkaError

from common.command_line import CommandParser, settings_help, variables_read
from common.env import SettingsError
from common.kafka import KafkaSettings
from consumers.processor.identity import Identity
from simulator.check import CheckError, CheckResult, check_events, expectation
from simulator.connection import Connection, Target
from simulator.delivery import Policy, deliver
from simulator.mix import MAX_COUNT, MixSpec, generate
from simulator.report import as_json, as_table, build_report

OK: Final = 0
CHECK_FAILED: Final = 1
USAGE: Final = 2
INTERRUPTED: Final = 130

PROG: Final = "python -m simulator"
DEFAULT_URL: Final = "http://127.0.0.1:8080/postbacks/mt"
PASSWORD_VARIABLE: Final = "SIMULATOR_PASSWORD"  # noqa: S105 - a variable name, no secret
# Events are timestamped by the processor's clock; read from this long before the run began.
CLOCK_SKEW_MS: Final = 5 * 60 * 1000

T = TypeVar("T")


class UsageError(Exception):
    """Arguments or settings that cannot work; the message names the option."""


@dataclass(frozen=True, slots=True)
class Options:
    target: Target
    mix: MixSpec
    policy: Policy
    max_duration: float | None
    as_json: bool
    quiet: bool
    kafka: KafkaSettings | None  # set when the events check is asked for
    events_topic: str
    wait_s: float
    settle_s: float
    identity: Identity


def settings_read() -> list[str]:
    """The variables the events check reads, for --help."""
    return [
        *variables_read(KafkaSettings.from_environ),
        "KAFKA_TOPIC_EVENTS",
        "DEDUPE_IDENTITY_FIELDS",
    ]


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog,
        description=(
            "Post a realistic mix of provider postbacks (v2 JSON and v1 XML delivery reports\n"
            "and inbound messages, some malformed) to a postback URL, one at a time over one\n"
            "keep-alive connection, with the provider's answer deadline and retries. Report\n"
            "what happened and, with --check-events, verify that every notification the URL\n"
            "acknowledged became exactly one event in Kafka."
        ),
        epilog=(
            "examples:\n"
            f"  {prog} --count 500                       # against `make run`\n"
            f"  {prog} --count 2000 --drop-answers 0.2 --retry-delay 1 \\\n"
            "      --check-events --bootstrap-servers 127.0.0.1:19092\n"
            f"  SIMULATOR_PASSWORD=... {prog} --user provider \\\n"
            "      --url https://pb.example.com/postbacks/acme\n"
            "exit status: 0 done (check passed), 1 events check failed, 2 usage error, "
            "130 interrupted.\ndetails: docs/simulator.md\n\n" + settings_help(settings_read())
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_argument_group("where to post")
    target.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the postback URL, http or https (default {DEFAULT_URL})",
    )
    target.add_argument(
        "--user", metavar="USER", help="Basic credentials user (or user:password@ in --url)"
    )
    target.add_argument(
        "--password",
        help=f"Basic credentials password; with --user alone it is read from ${PASSWORD_VARIABLE}",
    )
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument(
        "--count",
        type=_count,
        metavar="N",
        default=1000,
        help="postbacks to send, retries not counted (1000)",
    )
    traffic.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=None,
        help="makes the mix and the dropped answers reproducible (default: random, reported)",
    )
    traffic.add_argument(
        "--xml-share",
        type=_share,
        metavar="SHARE",
        default=0.1,
        help="share of messages in v1 XML (0.1)",
    )
    traffic.add_argument(
        "--malformed-share",
        type=_share,
        metavar="SHARE",
        default=0.01,
        help="share of postbacks that are malformed and must be dead-lettered (0.01)",
    )
    provider = parser.add_argument_group("provider behaviour")
    provider.add_argument(
        "--answer-timeout",
        type=_positive,
        metavar="SECONDS",
        default=10.0,
        help="seconds to connect and get an answer before the attempt fails (10)",
    )
    provider.add_argument(
        "--retry-delay",
        type=_non_negative,
        metavar="SECONDS",
        default=300.0,
        help="seconds after a failed attempt before the postback is sent again (300)",
    )
    provider.add_argument(
        "--max-retries",
        type=_retries,
        metavar="N",
        default=5,
        help="retries per postback before it is given up (5)",
    )
    provider.add_argument(
        "--drop-answers",
        type=_share,
        default=0.0,
        metavar="P",
        help="ignore a 200 with probability P, as if lost in transit, and retry the postback "
        "(0: never)",
    )
    provider.add_argument(
        "--max-duration",
        type=_positive,
        metavar="SECONDS",
        default=None,
        help="stop sending after this many seconds; what is still queued is reported "
        "abandoned (default: until every postback is acked or given up)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    check = parser.add_argument_group(
        "events check (Kafka security settings come from KAFKA_* variables, as for the services)"
    )
    check.add_argument(
        "--check-events",
        action="store_true",
        help="after the run, verify every acked notification is exactly one event",
    )
    check.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka to read the events from (default $KAFKA_BOOTSTRAP_SERVERS)",
    )
    check.add_argument(
        "--events-topic", metavar="TOPIC", help="default $KAFKA_TOPIC_EVENTS, else postbacks.events"
    )
    check.add_argument(
        "--wait",
        type=_non_negative,
        metavar="SECONDS",
        default=30.0,
        help="seconds to wait for the events to appear (30)",
    )
    check.add_argument(
        "--settle",
        type=_non_negative,
        metavar="SECONDS",
        default=2.0,
        help="seconds to keep reading for late duplicates once all events appeared (2)",
    )
    check.add_argument(
        "--identity-fields",
        metavar="FIELDS",
        help="the processor's DEDUPE_IDENTITY_FIELDS, if it has any (default: that variable)",
    )
    return parser


def parse_options(
    argv: Sequence[str] | None, environ: Mapping[str, str], prog: str = PROG
) -> Options:
    """Raises UsageError, or SystemExit from argparse (--help, unknown options)."""
    args = build_parser(prog).parse_args(argv)
    password = args.password
    if args.user is not None and password is None:
        password = environ.get(PASSWORD_VARIABLE)
        if password is None:
            raise UsageError(f"--user needs --password or ${PASSWORD_VARIABLE}")
    if password is not None and args.user is None:
        raise UsageError("--password needs --user")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        target = Target.parse(args.url, args.user, password)
        mix = MixSpec(
            count=args.count,
            seed=seed,
            xml_share=args.xml_share,
            malformed_share=args.malformed_share,
            start=datetime.now(UTC),
        )
        policy = Policy(args.answer_timeout, args.retry_delay, args.max_retries, args.drop_answers)
        fields = args.identity_fields
        identity = Identity.from_fields(
            fields if fields is not None else environ.get("DEDUPE_IDENTITY_FIELDS")
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    kafka = None
    if args.check_events:
        bootstrap = args.bootstrap_servers or environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            raise UsageError("--check-events needs --bootstrap-servers or $KAFKA_BOOTSTRAP_SERVERS")
        try:
            kafka = KafkaSettings.from_environ({**environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
        except SettingsError as error:
            raise UsageError(str(error)) from None
    elif args.bootstrap_servers or args.events_topic:
        raise UsageError("--bootstrap-servers and --events-topic only matter with --check-events")
    return Options(
        target=target,
        mix=mix,
        policy=policy,
        max_duration=args.max_duration,
        as_json=args.json,
        quiet=args.quiet,
        kafka=kafka,
        events_topic=args.events_topic or environ.get("KAFKA_TOPIC_EVENTS") or "postbacks.events",
        wait_s=args.wait,
        settle_s=args.settle,
        identity=identity,
    )


async def run(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    prog: str = PROG,
) -> int:
    """The whole command in the caller's event loop; returns the exit status.

    `stop` set from outside (a signal handler) ends sending early, as Ctrl-C does.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        options = parse_options(argv, os.environ if environ is None else environ, prog)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=err)
        return USAGE
    except SystemExit as exit_:  # argparse: --help (0) or a bad option (2), already printed
        return exit_.code if isinstance(exit_.code, int) else USAGE
    stop = stop if stop is not None else asyncio.Event()

    def notify(line: str) -> None:
        if not options.quiet:
            print(f"simulator: {line}", file=err, flush=True)

    since_ms = int(time.time() * 1000) - CLOCK_SKEW_MS
    postbacks = generate(options.mix)
    notify(f"posting {len(postbacks)} postbacks to {options.target.url} (seed {options.mix.seed})")
    connection = Connection(options.target)
    try:
        result = await deliver(
            postbacks,
            connection,
            options.policy,
            seed=options.mix.seed,
            stop=stop,
            max_duration=options.max_duration,
            notify=notify,
        )
    finally:
        await connection.close()
    check: CheckResult | None = None
    check_error = None
    if options.kafka is not None and not stop.is_set():
        notify(f"checking {options.events_topic} (up to {options.wait_s:g} s)")
        wanted = expectation(result.deliveries, options.identity)
        try:
            check = await _unless_stopped(
                check_events(
                    options.kafka,
                    options.events_topic,
                    wanted,
                    since_ms=since_ms,
                    wait_s=options.wait_s,
                    settle_s=options.settle_s,
                ),
                stop,
            )
        except (CheckError, KafkaError, OSError) as error:
            check_error = f"events check could not run: {str(error) or type(error).__name__}"
    report = build_report(
        result,
        url=options.target.url,
        seed=options.mix.seed,
        connections=connection.opened,
        resent=connection.resent,
        check=check,
    )
    if options.as_json:
        document = as_json(report)
        if check_error is not None:
            document["check"] = {"passed": False, "error": check_error}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode(), file=out)
    else:
        print(as_table(report), file=out)
        if check_error is not None:
            print(check_error, file=out)
    if stop.is_set():
        return INTERRUPTED
    if check_error is not None or (check is not None and not check.passed):
        return CHECK_FAILED
    return OK


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    return asyncio.run(_main(argv, prog))


async def _main(argv: Sequence[str] | None, prog: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            loop.add_signal_handler(signum, stop.set)
    return await run(argv, stop=stop, prog=prog)


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (and `work` cancelled) when `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    return task.result() if not task.cancelled() else None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(accept: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        value = _number(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return convert


_share = _checked(lambda value: 0.0 <= value <= 1.0, "a share between 0 and 1")
_positive = _checked(lambda value: value > 0, "a number above 0")
_non_negative = _checked(lambda value: value >= 0, "a number of 0 or more")


def _whole(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return convert


_count = _whole(1, MAX_COUNT)
_retries = _whole(0, 100)
